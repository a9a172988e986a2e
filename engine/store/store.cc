#include "engine/store/store.h"

#include <filesystem>

#include "engine/base/sha256.h"
#include "engine/base/url.h"
#include "engine/store/postgres_store.h"
#include "engine/store/rows.h"
#include "engine/store/sqlite_store.h"

namespace waymark {

namespace {
bool StartsWith(const std::string& s, const char* prefix) {
  return s.rfind(prefix, 0) == 0;
}
}  // namespace

bool IsPostgresUrl(const std::string& url) {
  return StartsWith(url, "postgresql://") || StartsWith(url, "postgres://");
}

std::string DeadLetterDigest(const DeadLetterRow& d) {
  std::string text;
  text.reserve(d.input.size() + d.reason.size() + d.raw.size() + 64);
  for (const std::string* part : {&d.input, &d.reason, &d.raw}) {
    text += std::to_string(part->size());
    text += ':';
    text += *part;
  }
  return Sha256Hex(text);
}

Result<std::optional<Event>> Store::EventById(const std::string& source, const std::string& id) {
  auto body = EventBody(source, id);
  if (!body.ok()) return body.status();
  if (body.value().empty()) return std::optional<Event>();
  auto e = rows::ParseEvent(source, id, body.value());
  if (!e.ok()) return e.status();
  return std::optional<Event>(std::move(e).value());
}

Result<std::vector<SendSummary>> Store::AllSends() {
  std::vector<SendSummary> out;
  for (;;) {
    auto page = SendsAfter(out.empty() ? 0 : out.back().seq, 1000);
    if (!page.ok()) return page.status();
    if (page.value().empty()) return out;
    for (SendSummary& s : page.value()) out.push_back(std::move(s));
  }
}

Result<std::unique_ptr<Store>> OpenStore(const std::string& url, Reconnect reconnect,
                                         StoreAccess access) {
  if (StartsWith(url, "sqlite:")) {
    std::string path = url.substr(7);
    if (std::error_code ec; (access == StoreAccess::kExisting || access == StoreAccess::kRead) &&
                            !std::filesystem::exists(path, ec)) {
      return Status::Error("no store at " + path + " (is --store, or [store] url, the run's?)");
    }
    return OpenSqliteStore(path, access);
  }
  if (IsPostgresUrl(url)) {
    return OpenPostgresStore(url, std::move(reconnect), access == StoreAccess::kRead);
  }
  return Status::Error("unknown store URL '" + RedactedUrl(url) +
                       "' (expected sqlite:PATH or postgresql://USER@HOST:PORT/DB)");
}

}  // namespace waymark
