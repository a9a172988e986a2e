// `waymark publish FILE|-`: CloudEvents JSON lines to NATS JetStream, each
// on events.<type> with Nats-Msg-Id = MsgId(source, id), asynchronously.
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <iostream>

#include <nlohmann/json.hpp>

#include "engine/base/json_text.h"
#include "engine/base/line_reader.h"
#include "engine/base/subject.h"
#include "engine/cli/commands.h"
#include "engine/cli/config.h"
#include "engine/source/jetstream.h"

namespace waymark::cli {
namespace {

struct PublishOptions {
  std::string input;
  JetStreamOptions stream;
  std::string config;
  bool json = false;
};

// The stream's deduplication key for an event: its source's length, the
// source and the id, so that no two (source, id) pairs share one ("a b" +
// "c" and "a" + "b c" do not).
std::string MsgId(const std::string& source, const std::string& id) {
  return std::to_string(source.size()) + ":" + source + " " + id;
}

int Publish(const PublishOptions& o) {
  InputFd input(o.input);
  if (!input.problem().empty()) {
    std::cerr << "waymark publish: " << input.problem() << "\n";
    return kExitUsage;
  }
  auto js = JetStream::Connect(o.stream);
  if (!js.ok()) {
    std::cerr << "waymark publish: " << js.error() << "\n";
    return kExitUsage;
  }
  JetStream& j = *js.value();
  // The event and its headers (Nats-Msg-Id, from its source and id, checked
  // below) in one message of at most the server's max_payload.
  const size_t max_line = size_t(std::max<int64_t>(j.max_payload() - 512, 0));
  bool tty = isatty(STDERR_FILENO);
  auto last_progress = std::chrono::steady_clock::now();
  std::string line, subject, stopped;
  size_t lineno = 0, sent = 0, refused = 0, length = 0;
  // A line longer than the server takes is not held whole (a pipe of
  // /dev/zero took all memory): its length is counted, it is refused.
  LineReader in(input.fd(), max_line);
  LineReader::Got got;
  while ((got = in.Next(&line, &length, -1)) != LineReader::Got::kEnd &&
         got != LineReader::Got::kError) {
    if (got != LineReader::Got::kLine) continue;  // a signal interrupted the wait
    ++lineno;
    // Blank (a line over the limit is kept only in part: it is not).
    if (length == line.size() && line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto refuse = [&](const std::string& why) {
      ++refused;
      std::cerr << (tty ? "\r\033[K" : "") << o.input << ":" << lineno << ": not published: " << why
                << "\n";
    };
    if (length > max_line) {
      refuse(std::to_string(length) + " bytes, more than the server takes in a message (" +
             std::to_string(max_line) + ")");
      continue;
    }
    nlohmann::json e;
    if (std::string why; !ParseJson(line, e, &why)) {  // the engine's reader, and its words
      refuse(why);
      continue;
    }
    if (!e.is_object()) {
      refuse("not a JSON object");
      continue;
    }
    auto attr = [&](const char* k) {
      auto it = e.find(k);
      return it != e.end() && it->is_string() ? it->get<std::string>() : std::string();
    };
    std::string id = attr("id"), source = attr("source"), type = attr("type");
    if (id.empty() || source.empty() || type.empty()) {
      refuse("a CloudEvent needs string id, source and type to be routed");
      continue;
    }
    if (HasControlCharacter(id) || HasControlCharacter(source)) {
      refuse("its id or source holds a control character");
      continue;
    }
    if (!SubjectFor(type, &subject)) {
      refuse("type '" + type.substr(0, 64) + (type.size() > 64 ? "…" : "") +
             "' cannot be a subject (at most " + std::to_string(kMaxSubjectType) +
             " bytes; no spaces, '*', '>' or empty parts)");
      continue;
    }
    std::string msg_id = MsgId(source, id);
    if (line.size() + msg_id.size() + 64 > size_t(j.max_payload())) {
      refuse("with its Nats-Msg-Id header (" + std::to_string(msg_id.size()) +
             " bytes: its source and id) more than the server takes in a message (" +
             std::to_string(j.max_payload()) + ")");
      continue;
    }
    if (Status s = j.PublishAsync(subject, msg_id, line); !s.ok()) {
      // The connection, not the line: stop reading, settle what is in flight.
      stopped = o.input + ":" + std::to_string(lineno) + ": " + s.message();
      break;
    }
    ++sent;
    auto now = std::chrono::steady_clock::now();
    if (tty && now - last_progress > std::chrono::milliseconds(200)) {
      last_progress = now;
      auto t = j.totals();
      std::cerr << "\r\033[Kpublished " << sent << ", acknowledged "
                << t.stored + t.duplicates + t.failed << std::flush;
    }
  }
  if (stopped.empty() && got == LineReader::Got::kError) {
    stopped = "reading " + o.input + " failed after line " + std::to_string(lineno) + ": " +
              std::strerror(in.error());
  }
  auto totals = j.CompletePublishing();
  if (tty) std::cerr << "\r\033[K";
  if (!totals.ok()) {
    std::cerr << "waymark publish: " << totals.error() << "\n";
    stopped += (stopped.empty() ? "" : "; ") + totals.error();
  }
  const auto t = totals.ok() ? totals.value() : j.totals();
  const size_t unanswered = totals.ok() ? 0 : sent - (t.stored + t.duplicates + t.failed);
  if (o.json) {
    std::cout << OutputJson({{"stream", o.stream.stream},
                             {"published", sent},
                             {"stored", t.stored},
                             {"duplicates", t.duplicates},
                             {"failed", t.failed},
                             {"unanswered", unanswered},
                             {"refused_lines", refused},
                             {"complete", stopped.empty()}})
              << "\n";
  } else {
    std::cout << "published " << sent << " events to stream " << o.stream.stream << ": " << t.stored
              << " stored, " << t.duplicates << " duplicates (already in the stream), " << t.failed
              << " failed";
    if (!totals.ok()) std::cout << ", " << unanswered << " unanswered";
    if (refused) std::cout << "; " << refused << " lines refused";
    std::cout << "\n";
  }
  if (t.failed) std::cerr << "waymark publish: first failure: " << t.first_error << "\n";
  if (!stopped.empty()) {
    std::cerr << "waymark publish: stopped: " << stopped << "\n";
    return 3;
  }
  return t.failed ? 3 : refused ? kExitRejected : kExitOk;
}

}  // namespace

void RegisterPublish(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<PublishOptions>();
  o->stream.url = "nats://127.0.0.1:4222";
  o->stream.apply_retention = false;  // the stream's settings are the engine's
  auto* cmd = app.add_subcommand("publish", "Publish CloudEvents JSON lines to NATS JetStream");
  cmd->add_option("input", o->input, "a file of CloudEvents JSON lines, or - for stdin")
      ->required();
  cmd->add_option("--source", o->stream.url, "NATS server, nats://HOST:PORT")
      ->capture_default_str();
  // As [source] stream is (schemas/config): a name NATS takes.
  cmd->add_option("--stream", o->stream.stream, "stream (created when missing)")
      ->check(CLI::Validator(
          [](std::string& v) -> std::string {
            bool ok = !v.empty() && v.find_first_not_of(
                                        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklm"
                                        "nopqrstuvwxyz0123456789_-") == std::string::npos;
            return ok ? "" : "a stream name is letters, digits, _ and -";
          },
          "NAME"))
      ->capture_default_str();
  cmd->add_flag("--json", o->json, "print the counts as JSON on stdout");
  AddConfigOption(cmd, o->config);
  cmd->callback([=] {
    auto c = Config::LoadOrSay("publish", o->config);
    if (!c) {
      *exit_code = kExitUsage;
      return;
    }
    c->UnderSource(cmd, o->stream);
    *exit_code = Publish(*o);
  });
}

}  // namespace waymark::cli
