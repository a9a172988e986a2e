#include "engine/delivery/template.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string_view>
#include <tuple>

#include <kainjow/mustache.hpp>

#include "engine/base/json_text.h"
#include "engine/delivery/message.h"

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
  // Never from the data. Parse refuses partial tags; this holds should its
  // reading of the tags ever differ from the library's.
  const mus::data* get_partial(const std::string&) const override { return nullptr; }
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
      // Falsy, as the Mustache spec has it: a section over it is skipped
      // and an inverted one shown (an empty string is truthy to kainjow).
      // As a variable it renders nothing either way.
      return mus::data{false};
    case nlohmann::json::value_t::number_float: {
      // The shortest form: a whole number as an integer (1e2 is "100", not
      // "100.0"), others as the shortest text that reads back the same.
      double v = j.get<double>();
      if (std::trunc(v) == v && std::fabs(v) <= 9007199254740992.0) {  // 2^53: exact
        return mus::data{std::to_string(int64_t(v))};
      }
      return mus::data{j.dump()};
    }
    default:
      return mus::data{j.dump()};  // integers
  }
}

std::string_view Trim(std::string_view v) {
  while (!v.empty() && std::isspace(static_cast<unsigned char>(v.front()))) v.remove_prefix(1);
  while (!v.empty() && std::isspace(static_cast<unsigned char>(v.back()))) v.remove_suffix(1);
  return v;
}

// Calls `on_tag` with each tag of `t` as the library reads them: the text
// between the delimiters, trimmed, whether it is a triple mustache
// ({{{name}}}), and where it begins; delimiters changed by a tag
// ({{=<% %>=}}, {{{=<% %>=}}}) are followed. A triple is one only with the default
// delimiters, both of them (after {{={{ ]]=}}, "{{{x]]" is a plain tag
// to the library: taken for a triple, the tags up to the next "}}}" went
// uncounted).
template <typename OnTag>
void EachTag(const std::string& t, OnTag&& on_tag) {
  std::string open = "{{", close = "}}";
  for (size_t p = t.find(open); p != std::string::npos; p = t.find(open, p)) {
    size_t at = p, begin = p + open.size();
    bool triple = open == "{{" && close == "}}" && t.compare(begin, 1, "{") == 0;
    if (triple) ++begin;
    size_t end = t.find(triple ? "}}}" : close, begin);
    if (end == std::string::npos) return;
    std::string_view tag = Trim(std::string_view(t).substr(begin, end - begin));
    p = end + (triple ? 3 : close.size());
    on_tag(tag, triple, at);
    // A triple's too ({{{=< >=}}}): the library reads any tag that begins
    // with '=' as new delimiters.
    if (tag.size() >= 2 && tag.front() == '=' && tag.back() == '=') {
      std::string_view both = Trim(tag.substr(1, tag.size() - 2));
      size_t gap = both.find_first_of(" \t\r\n");
      if (gap != std::string_view::npos) {
        std::string_view o = both.substr(0, gap), c = Trim(both.substr(gap));
        if (!o.empty() && !c.empty()) open = o, close = c;
      }
    }
  }
}

// How deep sections nest, tag by tag as the library reads them: spaces
// before the sigil ({{ #a}}) and changed delimiters ({{=<% %>=}}<%#a%>)
// count too (they were not counted, and 18,000 levels overflowed the
// stack).
int SectionDepth(const std::string& t) {
  int depth = 0, max = 0;
  EachTag(t, [&](std::string_view tag, bool triple, size_t) {
    if (triple || tag.empty()) return;
    if (tag[0] == '#' || tag[0] == '^') max = std::max(max, ++depth);
    if (tag[0] == '/') --depth;
  });
  return max;
}

// Where the first partial tag ({{> name}}) begins, or npos. There are no
// partials: the library looked the name up in the data and rendered the
// string it found as a template, unescaped (an event's field became
// markup, and one naming itself recursed until the stack ran out).
size_t FirstPartial(const std::string& t) {
  size_t first = std::string::npos;
  EachTag(t, [&](std::string_view tag, bool triple, size_t at) {
    if (!triple && !tag.empty() && tag[0] == '>' && first == std::string::npos) first = at;
  });
  return first;
}

}  // namespace

// One part (subject, from, text, html), parsed once.
struct Template::Part {
  std::string text;
  std::unique_ptr<mus::mustache> compiled;  // rendering keeps state in it
};

// A tree of the dotted names the template uses ("trigger.data.items"):
// rendering converts exactly these subtrees of the data. `all`: convert
// everything (the template changes its delimiters, so names are unknown).
struct Template::Names {
  bool whole = false;
  bool all = false;
  std::map<std::string, Names> children;

  void Add(const std::string& dotted) {
    if (dotted.empty() || dotted == ".") return;
    Names* n = this;
    size_t start = 0;
    while (true) {
      size_t dot = dotted.find('.', start);
      n = &n->children[dotted.substr(start, dot - start)];
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
    n->whole = true;
  }

  void Scan(const std::string& t) {
    EachTag(t, [&](std::string_view tag, bool triple, size_t) {
      if (!tag.empty() && tag[0] == '=') {
        all = true;  // new delimiters (a triple's too): names unknown from here
        return;
      }
      if (!triple && !tag.empty()) {
        char sigil = tag[0];
        if (sigil == '!' || sigil == '/' || sigil == '>') return;
        if (sigil == '#' || sigil == '^' || sigil == '&') tag = Trim(tag.substr(1));
      }
      Add(std::string(tag));
    });
  }

  mus::data Convert(const nlohmann::json& j) const {
    if (whole || !j.is_object()) return ToData(j);
    mus::data d{mus::data::type::object};
    for (const auto& [k, child] : children) {
      auto it = j.find(k);
      if (it != j.end()) d.set(k, child.Convert(*it));
    }
    return d;
  }
};

namespace {

// mustache's html_escape, but with `&#39;` for an apostrophe: its `&apos;`
// is not HTML 4, and mail clients that render HTML 4 (Outlook's Word
// engine) show it as written.
std::string EscapeHtml(const std::string& s) {
  std::string out;
  out.reserve(s.size() + s.size() / 8);
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

Result<std::string> RenderPart(const std::string& tmpl_name, const char* part, mus::mustache* m,
                               const mus::data& data) {
  if (!m) return std::string();
  StrictContext ctx(&data);
  // Appended straight to a string: mustache's own render(ctx) builds an
  // ostringstream (and its locale) per part.
  struct Sink {
    std::string out;
    Sink& operator<<(const std::string& s) {
      out += s;
      return *this;
    }
  } sink;
  m->render(ctx, sink);
  std::string out = std::move(sink.out);
  if (!m->is_valid()) {
    return Status::Error("template '" + tmpl_name + "' (" + part + "): " + m->error_message());
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

Template::Template() = default;
Template::Template(Template&&) noexcept = default;
Template::~Template() = default;

Result<Template> Template::Parse(const std::string& name, const std::string& text) {
  if (text.size() > kMaxTemplateBytes) {
    return Status::Error("template '" + name + "' is over the 256 KiB limit");
  }
  // Messages are UTF-8 (their headers and parts say so): a template saved
  // in another encoding would go out mislabelled from one transport and be
  // refused by another. StorableText replaces what is not UTF-8 (and NUL).
  if (std::string clean = StorableText(text); clean != text) {
    size_t at = size_t(std::mismatch(text.begin(), text.end(), clean.begin()).first - text.begin());
    return Status::Error(
        "template '" + name + "' is not UTF-8 text (line " +
        std::to_string(1 + std::count(text.begin(), text.begin() + long(at), '\n')) + ")");
  }
  std::string subject, from, text_part, html_part;
  // Where each line of a part (and the subject and from values) begins in
  // the file: (offset in the part, line, column), for the parser's errors.
  std::map<const std::string*, std::vector<std::tuple<size_t, int, size_t>>> starts;
  Template t;
  t.name_ = name;
  std::istringstream in(text);
  std::string line, *part = nullptr;
  bool header = true;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line == "--- text" || line == "--- html") {
      header = false;
      part = line == "--- text" ? &text_part : &html_part;
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
      // Spaces around the value are the line's, not the value's (a space
      // after the From's '>' refused every send of the template).
      size_t lead = std::min(value.find_first_not_of(" \t"), value.size());
      value.erase(0, lead);
      value.erase(value.find_last_not_of(" \t\r") + 1);
      if (key == "subject") {
        subject = value;
        starts[&subject] = {{0, lineno, colon + 1 + lead + 1}};
      } else if (key == "from") {
        from = value;
        starts[&from] = {{0, lineno, colon + 1 + lead + 1}};
        // Without tags it is what every send gets: checked now (by
        // `check` too), not at each send.
        if (std::string why = value.find('{') == std::string::npos ? MailboxProblem(value) : "";
            !why.empty()) {
          return Status::Error("template '" + name + "': from: " + why);
        }
      } else {
        return Status::Error("template '" + name + "': unknown header '" + key + "'");
      }
    } else {
      starts[part].push_back({part->size(), lineno, 1});
      *part += line + "\n";
    }
  }
  // The mustache parser's "... at N" (N: an offset in the part) as the
  // line and column in the file.
  auto located = [&](const std::string* source, std::string message) {
    size_t at = message.rfind(" at ");
    if (at == std::string::npos ||
        message.find_first_not_of("0123456789", at + 4) != message.npos ||
        at + 4 == message.size() || !starts.count(source)) {
      return message;
    }
    size_t offset = std::stoul(message.substr(at + 4));
    const auto& lines = starts[source];
    auto l = std::upper_bound(lines.begin(), lines.end(), offset,
                              [](size_t o, const auto& x) { return o < std::get<0>(x); });
    if (l == lines.begin()) return message;
    --l;
    return message.substr(0, at) + " at line " + std::to_string(std::get<1>(*l)) + ", column " +
           std::to_string(std::get<2>(*l) + offset - std::get<0>(*l));
  };
  if (subject.empty()) return Status::Error("template '" + name + "' has no subject");
  if (text_part.empty() && html_part.empty()) {
    return Status::Error("template '" + name + "' has neither a text nor an html part");
  }
  t.names_ = std::make_unique<Names>();
  std::pair<std::unique_ptr<Part>*, std::string*> parts[] = {
      {&t.subject_, &subject}, {&t.from_, &from}, {&t.text_, &text_part}, {&t.html_, &html_part}};
  for (auto& [slot, source] : parts) {
    if (SectionDepth(*source) > kMaxDepth) {
      return Status::Error("template '" + name + "': sections nested deeper than 16");
    }
    if (source->empty()) continue;
    const char* label = slot == &t.subject_ ? "subject"
                        : slot == &t.from_  ? "from"
                        : slot == &t.text_  ? "text"
                                            : "html";
    if (size_t at = FirstPartial(*source); at != std::string::npos) {
      return Status::Error(
          "template '" + name + "' (" + label + "): " +
          located(source, "partials ({{> name}}) are not supported at " + std::to_string(at)));
    }
    auto part = std::make_unique<Part>();
    part->text = std::move(*source);
    part->compiled = std::make_unique<mus::mustache>(part->text);
    if (!part->compiled->is_valid()) {
      return Status::Error("template '" + name + "' (" + label +
                           "): " + located(source, part->compiled->error_message()));
    }
    if (slot != &t.html_) {
      part->compiled->set_custom_escape([](const std::string& v) { return v; });
    } else {
      part->compiled->set_custom_escape(EscapeHtml);
    }
    t.names_->Scan(part->text);
    *slot = std::move(part);
  }
  return t;
}

Result<RenderedMessage> Template::Render(const nlohmann::json& data) const {
  if (!data.is_object()) return Status::Error("template data must be a JSON object");
  TemplateRoots roots;
  for (const auto& [k, v] : data.items()) roots.emplace_back(k, &v);
  return Render(roots);
}

Result<RenderedMessage> Template::Render(const TemplateRoots& roots) const {
  mus::data d{mus::data::type::object};
  for (const auto& [root, value] : roots) {
    if (!value) continue;
    if (names_->all) {
      d.set(root, ToData(*value));
    } else if (auto it = names_->children.find(root); it != names_->children.end()) {
      d.set(root, it->second.Convert(*value));
    }
  }
  RenderedMessage m;
  std::pair<std::string*, const Part*> parts[] = {{&m.subject, subject_.get()},
                                                  {&m.from, from_.get()},
                                                  {&m.text, text_.get()},
                                                  {&m.html, html_.get()}};
  const char* labels[] = {"subject", "from", "text", "html"};
  for (size_t k = 0; k < 4; ++k) {
    auto out = RenderPart(name_, labels[k],
                          parts[k].second ? parts[k].second->compiled.get() : nullptr, d);
    if (!out.ok()) return out.status();
    *parts[k].first = std::move(out).value();
  }
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
