// The Store on SQLite (WAL, synchronous=FULL): the embedded default.
#pragma once

#include <memory>
#include <string>

#include "engine/store/store.h"

namespace waymark {

// `read_only`: the store must exist, is not upgraded (its schema must be
// this binary's: an older one is refused) and the caller only reads;
// without it, a store that does not exist is created and an older one
// upgraded.
Result<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path, bool read_only = false);

}  // namespace waymark
