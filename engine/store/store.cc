#include "engine/store/store.h"

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

Result<std::optional<Event>> Store::EventById(const std::string& source, const std::string& id) {
  auto body = EventBody(source, id);
  if (!body.ok()) return body.status();
  if (body.value().empty()) return std::optional<Event>();
  auto e = rows::ParseEvent(source, id, body.value());
  if (!e.ok()) return e.status();
  return std::optional<Event>(std::move(e).value());
}

Result<std::unique_ptr<Store>> OpenStore(const std::string& url, Reconnect reconnect) {
  if (StartsWith(url, "sqlite:")) return OpenSqliteStore(url.substr(7));
  if (IsPostgresUrl(url)) return OpenPostgresStore(url, std::move(reconnect));
  return Status::Error("unknown store URL '" + url +
                       "' (expected sqlite:PATH or postgresql://USER@HOST:PORT/DB)");
}

}  // namespace waymark
