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

class Template {
 public:
  static Result<Template> Parse(const std::string& name, const std::string& text);
  Result<RenderedMessage> Render(const nlohmann::json& data) const;
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  std::string subject_, from_, text_, html_;
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
