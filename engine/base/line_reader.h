// Lines of a file descriptor, read with read(2) and waited for with
// poll(2), for inputs that may be a pipe with a slow or idle writer
// (`waymark run --events -`):
//
// - a complete line is handed over at once, and the caller learns when no
//   complete line is there yet (kNothingYet), so it can commit what it
//   holds instead of waiting for a full batch;
// - a wait ends after at most `wait_ms`, and at once on a signal (poll(2)
//   is never restarted after a handler), so a stop request is seen
//   (std::getline's read(2) is restarted after a handler installed with
//   std::signal, and an idle pipe held SIGTERM off);
// - a line longer than `max_line` bytes is not held: its first `kKept`
//   bytes are kept, the rest is counted and dropped up to its newline, and
//   it is handed over with its length, for the caller to refuse.
//
// A last line without a newline is a line. The descriptor is not closed.
#pragma once

#include <cstddef>
#include <string>

namespace waymark {

class LineReader {
 public:
  static constexpr size_t kKept = 4096;  // bytes kept of a line over the limit
  enum class Got { kLine, kNothingYet, kEnd, kError };

  LineReader(int fd, size_t max_line) : fd_(fd), max_line_(max_line) {}

  // kLine: `*line` is the next line without its newline, and `*length` its
  // length in bytes (more than `line->size()` when it was over the limit).
  // kNothingYet: no complete line came within `wait_ms` (0: do not wait),
  // or a signal came. kEnd: the input ended and every line was handed over.
  // kError: read(2) failed; error() is its errno.
  Got Next(std::string* line, size_t* length, int wait_ms);
  int error() const { return error_; }

 private:
  const int fd_;
  const size_t max_line_;
  std::string buf_;         // bytes read and not yet handed over, from begin_
  size_t begin_ = 0;        // where the next line starts in buf_
  size_t scanned_ = 0;      // buf_ holds no newline before this offset
  std::string long_;        // the kept start of a line over the limit
  size_t long_length_ = 0;  // its length so far; 0: not in such a line
  bool end_ = false;
  int error_ = 0;
};

}  // namespace waymark
