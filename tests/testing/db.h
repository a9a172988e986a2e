// Databases from tests: a fresh PostgreSQL database on the server the suite
// runs against, and two-column query results from either store's files.
#pragma once

#include <sqlite3.h>

#include <filesystem>
#include <map>
#include <string>

#include <pqxx/pqxx>

namespace waymark::testing_util {

// Drops and creates `name` on `server` (postgresql://USER@HOST:PORT);
// returns its URL.
inline std::string FreshPostgresDatabase(const std::string& server, const std::string& name) {
  pqxx::connection admin(server + "/postgres");
  pqxx::nontransaction t(admin);
  t.exec("DROP DATABASE IF EXISTS " + t.quote_name(name));
  t.exec("CREATE DATABASE " + t.quote_name(name));
  return server + "/" + name;
}

// The first two columns of `sql`, as text: column 0 -> column 1.
inline std::map<std::string, std::string> PostgresRows(const std::string& url, const char* sql) {
  std::map<std::string, std::string> out;
  pqxx::connection c(url);
  pqxx::read_transaction t(c);
  for (const auto& r : t.exec(sql)) out[r[0].as<std::string>()] = r[1].as<std::string>();
  return out;
}

inline std::map<std::string, std::string> SqliteRows(const std::filesystem::path& db,
                                                     const char* sql) {
  sqlite3* h = nullptr;
  std::map<std::string, std::string> out;
  if (sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) return out;
  sqlite3_stmt* s = nullptr;
  sqlite3_prepare_v2(h, sql, -1, &s, nullptr);
  while (s && sqlite3_step(s) == SQLITE_ROW) {
    out[reinterpret_cast<const char*>(sqlite3_column_text(s, 0))] =
        reinterpret_cast<const char*>(sqlite3_column_text(s, 1));
  }
  sqlite3_finalize(s);
  sqlite3_close(h);
  return out;
}

}  // namespace waymark::testing_util
