// The Store on SQLite (WAL, synchronous=FULL): the embedded default.
#pragma once

#include <memory>
#include <string>

#include "engine/store/store.h"

namespace waymark {

Result<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path);

}  // namespace waymark
