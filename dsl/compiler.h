// The journey compiler: semantic checks on the AST, then lowering to the
// state-machine table (ir.h), then checks on the machine's graph.
//
// Every problem found goes to the DiagnosticSink; compilation does not stop
// at the first one. The compiled journey is returned only when there was no
// error (warnings allowed).
#pragma once

#include <optional>

#include "dsl/ast.h"
#include "dsl/diagnostics.h"
#include "dsl/ir.h"
#include "dsl/schema_registry.h"

namespace waymark::dsl {

std::optional<CompiledJourney> Compile(const Journey& journey, const SchemaRegistry& schemas,
                                       DiagnosticSink& diags);

// True when `name` is an IANA time-zone name known to this machine's tz
// database (e.g. "Europe/Berlin"); "localtime", the host's zone, is not.
bool IsValidTimeZone(const std::string& name);

}  // namespace waymark::dsl
