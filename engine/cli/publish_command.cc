// `waymark publish FILE|-`: CloudEvents JSON lines to NATS JetStream, each
// on events.<type> with Nats-Msg-Id = "<source> <id>", asynchronously.
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <iostream>

#include <nlohmann/json.hpp>

#include "engine/cli/commands.h"
#include "engine/cli/config.h"
#include "engine/source/jetstream.h"

namespace waymark::cli {
namespace {

struct PublishOptions {
  std::string input;
  JetStreamOptions stream;
  std::string config;
};

// The subject for an event type: events.<type>, where the type must make
// valid subject tokens (no spaces, wildcards or empty tokens).
bool SubjectFor(const std::string& type, std::string* subject) {
  if (type.empty() || type.front() == '.' || type.back() == '.' ||
      type.find("..") != std::string::npos) {
    return false;
  }
  for (unsigned char c : type) {
    if (c <= ' ' || c == '*' || c == '>' || c == 0x7f) return false;
  }
  *subject = "events." + type;
  return true;
}

int Publish(const PublishOptions& o) {
  std::ifstream file;
  std::istream* in = &std::cin;
  if (o.input != "-") {
    file.open(o.input, std::ios::binary);
    if (!file) {
      std::cerr << "waymark publish: cannot read " << o.input << "\n";
      return kExitUsage;
    }
    in = &file;
  }
  auto js = JetStream::Connect(o.stream);
  if (!js.ok()) {
    std::cerr << "waymark publish: " << js.error() << "\n";
    return kExitUsage;
  }
  JetStream& j = *js.value();
  bool tty = isatty(STDERR_FILENO);
  auto last_progress = std::chrono::steady_clock::now();
  std::string line, subject;
  size_t lineno = 0, sent = 0, refused = 0;
  while (std::getline(*in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto refuse = [&](const std::string& why) {
      ++refused;
      std::cerr << (tty ? "\r\033[K" : "") << o.input << ":" << lineno << ": not published: " << why
                << "\n";
    };
    nlohmann::json e = nlohmann::json::parse(line, nullptr, false);
    if (e.is_discarded() || !e.is_object()) {
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
    if (!SubjectFor(type, &subject)) {
      refuse("type '" + type + "' cannot be a subject (no spaces, '*', '>' or empty parts)");
      continue;
    }
    if (Status s = j.PublishAsync(subject, source + " " + id, line); !s.ok()) {
      std::cerr << "waymark publish: " << s.message() << "\n";
      return 3;
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
  auto totals = j.CompletePublishing();
  if (tty) std::cerr << "\r\033[K";
  if (!totals.ok()) {
    std::cerr << "waymark publish: " << totals.error() << "\n";
    return 3;
  }
  const auto& t = totals.value();
  std::cout << "published " << sent << " events to stream " << o.stream.stream << ": " << t.stored
            << " stored, " << t.duplicates << " duplicates (already in the stream), " << t.failed
            << " failed";
  if (refused) std::cout << "; " << refused << " lines refused";
  std::cout << "\n";
  if (t.failed) std::cerr << "waymark publish: first failure: " << t.first_error << "\n";
  return t.failed ? 3 : refused ? kExitRejected : kExitOk;
}

}  // namespace

void RegisterPublish(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<PublishOptions>();
  o->stream.url = "nats://127.0.0.1:4222";
  auto* cmd = app.add_subcommand("publish", "Publish CloudEvents JSON lines to NATS JetStream");
  cmd->add_option("input", o->input, "a file of CloudEvents JSON lines, or - for stdin")
      ->required();
  cmd->add_option("--source", o->stream.url, "NATS server, nats://HOST:PORT")
      ->capture_default_str();
  cmd->add_option("--stream", o->stream.stream, "stream (created when missing)")
      ->capture_default_str();
  cmd->add_option("--config", o->config,
                  "configuration file (default: ./waymark.toml when there is one)");
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
