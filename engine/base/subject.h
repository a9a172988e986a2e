// The subject an event is published on in the stream: events.<type>
// (docs/operations.md, "The stream"). `waymark publish` uses it, and
// `waymark check` warns of a journey's event type that cannot be one.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace waymark {

// The longest type a subject takes: its protocol line stays well inside
// nats-server's limit (4 KiB).
constexpr size_t kMaxSubjectType = 256;

// events.<type> into `subject` (when not null), if the type makes valid
// subject tokens: no spaces, control characters, wildcards ('*', '>') or
// empty tokens, at most kMaxSubjectType bytes. False otherwise.
bool SubjectFor(std::string_view type, std::string* subject);

}  // namespace waymark
