// The Store on SQLite (WAL, synchronous=FULL): the embedded default.
#pragma once

#include <memory>
#include <string>

#include "engine/store/store.h"

namespace waymark {

// `access` (store.h): kCreate makes a store that does not exist, or an
// empty file, into one and upgrades an older one; kExisting wants a
// waymark store already there (upgraded if older); kRead too, not
// upgraded (its schema must be this binary's: an older one is refused),
// and the caller only reads.
Result<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path,
                                               StoreAccess access = StoreAccess::kCreate);

}  // namespace waymark
