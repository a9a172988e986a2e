// Running a call on a thread with a large stack. std::regex (which
// valijson's `pattern` and `format` checks use, and QuickSchema's) recurses
// once per character matched: a string of a few hundred thousand
// characters runs an ordinary 8 MiB stack out and kills the process. Input
// that may hold such a string is judged on a thread whose stack holds the
// longest one an input may have.
#pragma once

#include <cstddef>
#include <functional>

namespace waymark {

// Above this many bytes, a text may hold a string std::regex cannot match
// on an ordinary stack (it needs about 300 bytes of stack per character).
inline constexpr size_t kLargeStackTextBytes = 16 * 1024;

// Runs `f` on a thread of its own with a 1 GiB stack (address space: only
// the pages a deep match touches are used), and waits for it; what `f`
// throws is thrown again here. When such a thread cannot be made, `f` runs
// on the calling thread.
void RunOnLargeStack(const std::function<void()>& f);

}  // namespace waymark
