#include "engine/base/line_reader.h"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace waymark {

LineReader::Got LineReader::Next(std::string* line, size_t* length, int wait_ms) {
  for (;;) {
    const char* data = buf_.data();
    if (const void* nl = std::memchr(data + scanned_, '\n', buf_.size() - scanned_)) {
      size_t end = static_cast<const char*>(nl) - data;
      if (long_length_ > 0) {
        *length = long_length_ + (end - begin_);
        line->swap(long_);
        long_.clear();
        long_length_ = 0;
      } else {
        *length = end - begin_;
        line->assign(data + begin_, *length > max_line_ ? std::min(*length, kKept) : *length);
      }
      begin_ = scanned_ = end + 1;
      return Got::kLine;
    }
    scanned_ = buf_.size();
    size_t held = buf_.size() - begin_;
    if (long_length_ > 0 || held > max_line_) {  // over the limit: keep the start only
      if (long_length_ == 0) long_.assign(buf_, begin_, std::min(held, kKept));
      long_length_ += held;
      buf_.clear();
      begin_ = scanned_ = 0;
    } else if (begin_ > 0 && begin_ >= buf_.size() / 2) {
      buf_.erase(0, begin_);
      scanned_ -= begin_;
      begin_ = 0;
    }
    if (end_) {
      if (long_length_ > 0) {
        *length = long_length_;
        line->swap(long_);
        long_.clear();
        long_length_ = 0;
        return Got::kLine;
      }
      if (buf_.size() > begin_) {
        line->assign(buf_, begin_, std::string::npos);
        *length = line->size();
        buf_.clear();
        begin_ = scanned_ = 0;
        return Got::kLine;
      }
      return Got::kEnd;
    }
    pollfd p{fd_, POLLIN, 0};
    int ready = ::poll(&p, 1, wait_ms);
    if (ready == 0 || (ready < 0 && errno == EINTR)) return Got::kNothingYet;
    if (ready < 0) {
      error_ = errno;
      return Got::kError;
    }
    constexpr size_t kChunk = 64 * 1024;
    size_t old = buf_.size();
    buf_.resize(old + kChunk);
    ssize_t n = ::read(fd_, buf_.data() + old, kChunk);
    buf_.resize(old + std::max<ssize_t>(n, 0));
    if (n == 0) {
      end_ = true;
    } else if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) return Got::kNothingYet;
      error_ = errno;
      return Got::kError;
    }
  }
}

}  // namespace waymark
