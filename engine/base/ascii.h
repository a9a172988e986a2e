// ASCII case folding, for what has no other case rules: domains, header
// names, configuration keys.
#pragma once

#include <cctype>
#include <string>

namespace waymark {

inline std::string AsciiLower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace waymark
