#include "engine/base/subject.h"

namespace waymark {

bool SubjectFor(std::string_view type, std::string* subject) {
  if (type.empty() || type.size() > kMaxSubjectType || type.front() == '.' || type.back() == '.' ||
      type.find("..") != std::string_view::npos) {
    return false;
  }
  for (unsigned char c : type) {
    if (c <= ' ' || c == '*' || c == '>' || c == 0x7f) return false;
  }
  if (subject) *subject = "events." + std::string(type);
  return true;
}

}  // namespace waymark
