// The Store on PostgreSQL (libpqxx): the production store. The same
// conformance suite as SQLite (tests/engine/store_conformance_test.cc).
// The schema is versioned: MigratePostgres applies what a database lacks
// (`waymark migrate`); opening a store checks that its version is this
// binary's. See docs/engine.md, "PostgreSQL".
#pragma once

#include <memory>
#include <string>

#include "engine/store/store.h"

namespace waymark {

// `url`: a libpq connection URI, postgresql://USER@HOST:PORT/DB[?...].
Result<std::unique_ptr<Store>> OpenPostgresStore(const std::string& url, Reconnect reconnect = {},
                                                 bool read_only = false);

// Brings the database's schema to this binary's version (or, when
// `to_version` is given, to that one: the tests of upgrades stop there;
// never down), one migration at a time, each in its own transaction, under
// an advisory lock (several processes may run it at once). Returns the
// versions it went from and to. On failure, `applying` (when given) says
// whether a migration itself failed (true), or the database could not be
// reached or is not one this binary can migrate (false).
Result<std::pair<int, int>> MigratePostgres(const std::string& url, int to_version = 0,
                                            bool* applying = nullptr);

// Whether `batch`, whose COMMIT in transaction `xid` (pg_current_xact_id())
// by server process `backend` lost its answer, is stored: what a store
// asks after reconnecting (docs/engine.md, "A lost connection"), here on a
// connection of its own to `url`, for its tests.
Result<bool> CommitLanded(const std::string& url, const std::string& xid, int backend,
                          const Batch& batch);

// The URL the store connects with: `url` with these added where it sets
// none: network timeouts (connect_timeout=10, keepalives_idle=30,
// keepalives_interval=10, keepalives_count=3, tcp_user_timeout=60000;
// connect_timeout not when PGCONNECT_TIMEOUT is set), since libpq's own
// defaults wait for ever to connect and about two hours for a host that
// vanished without a reset, deaf to SIGTERM; and client_encoding=UTF8, the
// encoding of the text the store sends (PGCLIENTENCODING could say
// otherwise).
std::string WithConnectionDefaults(const std::string& url);

}  // namespace waymark
