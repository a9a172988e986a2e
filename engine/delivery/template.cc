#include "engine/delivery/template.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <kainjow/mustache.hpp>

namespace waymark {

namespace mus = kainjow::mustache;

namespace {

constexpr size_t kMaxTemplateBytes = 256 * 1024;
constexpr int kMaxDepth = 16;
constexpr size_t kMaxRenderedBytes = 1 << 20;

// The default context, remembering names it could not find.
class StrictContext : public mus::context<std::string> {
 public:
  explicit StrictContext(const mus::data* d) : mus::context<std::string>(d) {}
  const mus::data* get(const std::string& name) const override {
    const mus::data* v = mus::context<std::string>::get(name);
    if (!v) missing.push_back(name);
    return v;
  }
  mutable std::vector<std::string> missing;
};

mus::data ToData(const nlohmann::json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::object: {
      mus::data d{mus::data::type::object};
      for (const auto& [k, v] : j.items()) d.set(k, ToData(v));
      return d;
    }
    case nlohmann::json::value_t::array: {
      mus::data d{mus::data::type::list};
      for (const auto& v : j) d.push_back(ToData(v));
      return d;
    }
    case nlohmann::json::value_t::string:
      return mus::data{j.get<std::string>()};
    case nlohmann::json::value_t::boolean:
      return mus::data{j.get<bool>()};
    case nlohmann::json::value_t::null:
      return mus::data{std::string()};
    default:
      return mus::data{j.dump()};  // numbers as written
  }
}

int SectionDepth(const std::string& t) {
  int depth = 0, max = 0;
  for (size_t p = t.find("{{"); p != std::string::npos; p = t.find("{{", p + 2)) {
    if (p + 2 >= t.size()) break;
    char c = t[p + 2];
    if (c == '#' || c == '^') max = std::max(max, ++depth);
    if (c == '/') --depth;
  }
  return max;
}

Result<std::string> RenderPart(const std::string& tmpl_name, const char* part,
                               const std::string& text, const mus::data& data, bool html) {
  if (text.empty()) return std::string();
  mus::mustache m{text};
  if (!m.is_valid()) {
    return Status::Error("template '" + tmpl_name + "' (" + part + "): " + m.error_message());
  }
  if (!html) m.set_custom_escape([](const std::string& s) { return s; });
  StrictContext ctx(&data);
  std::string out = m.render(ctx);
  if (!m.is_valid()) {
    return Status::Error("template '" + tmpl_name + "' (" + part + "): " + m.error_message());
  }
  if (!ctx.missing.empty()) {
    return Status::Error("template '" + tmpl_name + "' (" + part + "): no value for '" +
                         ctx.missing.front() + "'");
  }
  if (out.size() > kMaxRenderedBytes) {
    return Status::Error("template '" + tmpl_name + "' (" + part + "): rendered size over 1 MiB");
  }
  return out;
}

}  // namespace

Result<Template> Template::Parse(const std::string& name, const std::string& text) {
  if (text.size() > kMaxTemplateBytes) {
    return Status::Error("template '" + name + "' is over the 256 KiB limit");
  }
  Template t;
  t.name_ = name;
  std::istringstream in(text);
  std::string line, *part = nullptr;
  bool header = true;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line == "--- text" || line == "--- html") {
      header = false;
      part = line == "--- text" ? &t.text_ : &t.html_;
      continue;
    }
    if (header) {
      if (line.empty() || line[0] == '#') continue;
      size_t colon = line.find(':');
      if (colon == std::string::npos) {
        return Status::Error("template '" + name + "': expected 'subject:', 'from:' or '--- text'");
      }
      std::string key = line.substr(0, colon);
      std::string value = line.substr(colon + 1);
      value.erase(0, value.find_first_not_of(' '));
      if (key == "subject") {
        t.subject_ = value;
      } else if (key == "from") {
        t.from_ = value;
      } else {
        return Status::Error("template '" + name + "': unknown header '" + key + "'");
      }
    } else {
      *part += line + "\n";
    }
  }
  if (t.subject_.empty()) return Status::Error("template '" + name + "' has no subject");
  if (t.text_.empty() && t.html_.empty()) {
    return Status::Error("template '" + name + "' has neither a text nor an html part");
  }
  for (const std::string* p : {&t.subject_, &t.text_, &t.html_}) {
    if (SectionDepth(*p) > kMaxDepth) {
      return Status::Error("template '" + name + "': sections nested deeper than 16");
    }
  }
  return t;
}

Result<RenderedMessage> Template::Render(const nlohmann::json& data) const {
  mus::data d = ToData(data);
  RenderedMessage m;
  auto subject = RenderPart(name_, "subject", subject_, d, false);
  if (!subject.ok()) return subject.status();
  m.subject = subject.value();
  auto from = RenderPart(name_, "from", from_, d, false);
  if (!from.ok()) return from.status();
  m.from = from.value();
  auto text = RenderPart(name_, "text", text_, d, false);
  if (!text.ok()) return text.status();
  m.text = text.value();
  auto html = RenderPart(name_, "html", html_, d, true);
  if (!html.ok()) return html.status();
  m.html = html.value();
  return m;
}

Result<const Template*> TemplateSet::Get(const std::string& name) {
  auto it = cache_.find(name);
  if (it != cache_.end()) return static_cast<const Template*>(it->second.get());
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-')) {
      return Status::Error("invalid template name '" + name + "'");
    }
  }
  std::filesystem::path p = std::filesystem::path(dir_) / (name + ".mustache");
  std::ifstream in(p, std::ios::binary);
  if (!in) return Status::Error("template '" + name + "' not found (" + p.string() + ")");
  std::stringstream ss;
  ss << in.rdbuf();
  auto t = Template::Parse(name, ss.str());
  if (!t.ok()) return t.status();
  auto owned = std::make_unique<Template>(std::move(t).value());
  const Template* raw = owned.get();
  cache_[name] = std::move(owned);
  return raw;
}

}  // namespace waymark
