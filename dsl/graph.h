// Drawing a compiled journey: Graphviz DOT and Mermaid flowcharts, generated
// from the state-machine table itself, so the picture is the machine.
#pragma once

#include <string>

#include "dsl/ir.h"

namespace waymark::dsl {

std::string ToDot(const CompiledJourney& j);
std::string ToMermaid(const CompiledJourney& j);

}  // namespace waymark::dsl
