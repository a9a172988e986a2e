// Mustache templates for messages: journeys/templates/NAME.mustache.
//
// File format: header lines, then the parts:
//
//   subject: Welcome to Acme, {{trigger.data.first_name}}
//   from: Acme <hello@acme.example>          (optional)
//   --- text
//   Hi {{trigger.data.first_name}}, ...
//   --- html
//   <p>Hi {{trigger.data.first_name}}, ...</p>
//
// Rendering is strict: a name the data does not have is an error, never an
// empty string. {{x}} is HTML-escaped in the html part ({{{x}}} is not);
// the subject and text part are not escaped. Limits: 256 KiB of template,
// sections nested 16 deep, 1 MiB rendered. The data is what the send saw:
// {trigger, event, vars, key, journey}.
//
// A template is parsed once. Rendering converts only the parts of the data
// that the template names (a name's whole subtree), not the whole event.
#pragma once

#include <map>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/base/result.h"

namespace waymark {

struct RenderedMessage {
  std::string subject;
  std::string from;  // empty: the default sender
  std::string text;
  std::string html;
};

// The data's top-level names and their values, which are not copied.
using TemplateRoots = std::vector<std::pair<std::string, const nlohmann::json*>>;

class Template {
 public:
  static Result<Template> Parse(const std::string& name, const std::string& text);
  // `data` must be an object: its members are the roots.
  Result<RenderedMessage> Render(const nlohmann::json& data) const;
  Result<RenderedMessage> Render(const TemplateRoots& roots) const;
  const std::string& name() const { return name_; }

  Template(Template&&) noexcept;
  ~Template();

 private:
  Template();
  struct Part;
  struct Names;
  std::string name_;
  std::unique_ptr<Part> subject_, from_, text_, html_;
  std::unique_ptr<Names> names_;  // the names the parts use
};

// Loads templates lazily from a directory and caches them.
class TemplateSet {
 public:
  explicit TemplateSet(std::string dir) : dir_(std::move(dir)) {}
  Result<const Template*> Get(const std::string& name);

 private:
  std::string dir_;
  std::map<std::string, std::unique_ptr<Template>> cache_;
};

}  // namespace waymark
