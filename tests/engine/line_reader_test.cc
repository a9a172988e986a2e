#include "engine/base/line_reader.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <string>
#include <thread>

#include <gtest/gtest.h>

namespace waymark {
namespace {

using Got = LineReader::Got;

struct Pipe {
  int fd[2];
  Pipe() { EXPECT_EQ(::pipe(fd), 0); }
  ~Pipe() {
    ::close(fd[0]);
    CloseWriter();
  }
  void Write(const std::string& s) const {
    for (size_t done = 0; done < s.size();) {
      ssize_t n = ::write(fd[1], s.data() + done, s.size() - done);
      ASSERT_GT(n, 0);
      done += size_t(n);
    }
  }
  void CloseWriter() {
    if (fd[1] >= 0) ::close(fd[1]);
    fd[1] = -1;
  }
};

TEST(LineReader, HandsOverCompleteLinesAndSaysWhenNoneIsThereYet) {
  Pipe p;
  LineReader r(p.fd[0], 100);
  std::string line;
  size_t length = 0;
  p.Write("a\nb");
  ASSERT_EQ(r.Next(&line, &length, 0), Got::kLine);
  EXPECT_EQ(line, "a");
  EXPECT_EQ(length, 1u);
  // "b" is not a line yet, and the writer is still there.
  EXPECT_EQ(r.Next(&line, &length, 0), Got::kNothingYet);
  EXPECT_EQ(r.Next(&line, &length, 10), Got::kNothingYet);
  p.Write("c\n\nd");
  ASSERT_EQ(r.Next(&line, &length, 0), Got::kLine);
  EXPECT_EQ(line, "bc");
  ASSERT_EQ(r.Next(&line, &length, 0), Got::kLine);
  EXPECT_EQ(line, "");
  // The last line needs no newline.
  p.CloseWriter();
  ASSERT_EQ(r.Next(&line, &length, 0), Got::kLine);
  EXPECT_EQ(line, "d");
  EXPECT_EQ(r.Next(&line, &length, 0), Got::kEnd);
  EXPECT_EQ(r.Next(&line, &length, 0), Got::kEnd);
}

TEST(LineReader, ManyLinesAcrossReads) {
  Pipe p;
  std::string all;
  for (int i = 0; i < 5000; ++i) all += "line " + std::to_string(i) + "\n";
  std::thread writer([&] {
    p.Write(all);
    p.CloseWriter();
  });
  LineReader r(p.fd[0], 100);
  std::string line;
  size_t length = 0;
  int n = 0;
  for (Got got; (got = r.Next(&line, &length, 1000)) != Got::kEnd;) {
    if (got == Got::kNothingYet) continue;
    ASSERT_EQ(got, Got::kLine);
    ASSERT_EQ(line, "line " + std::to_string(n));
    ++n;
  }
  writer.join();
  EXPECT_EQ(n, 5000);
}

// Under a limit smaller than what is kept of a longer line, the line is
// kept whole and no more (it was read 4,096 bytes from its start, past its
// newline).
TEST(LineReader, ALineOverASmallLimitIsKeptWholeAndNoMore) {
  Pipe p;
  std::string text(150, 'a');
  text += "\nnext\n";
  p.Write(text);
  LineReader r(p.fd[0], 100);
  std::string line;
  size_t length = 0;
  ASSERT_EQ(r.Next(&line, &length, 0), Got::kLine);
  EXPECT_EQ(length, 150u);
  EXPECT_EQ(line, std::string(150, 'a'));
  ASSERT_EQ(r.Next(&line, &length, 0), Got::kLine);
  EXPECT_EQ(line, "next");
}

// A line over the limit is not held: its start is kept, its length told,
// and the lines after it are read as before, wherever the reads split it.
TEST(LineReader, ALineOverTheLimitKeepsItsStartAndItsLength) {
  const size_t limit = 10000;
  std::string big(200000, 'x');
  big[0] = '<';
  for (bool in_pieces : {false, true}) {
    SCOPED_TRACE(in_pieces ? "written in pieces" : "written at once");
    Pipe p;
    std::thread writer([&] {
      if (in_pieces) {
        for (size_t i = 0; i < big.size(); i += 7000) p.Write(big.substr(i, 7000));
      } else {
        p.Write(big);
      }
      p.Write("\nok\n" + std::string(limit + 1, 'y') + "\n" + std::string(limit, 'z') + "\n" + big);
      p.CloseWriter();
    });
    LineReader r(p.fd[0], limit);
    std::string line;
    size_t length = 0;
    auto next = [&] {
      Got got;
      while ((got = r.Next(&line, &length, 1000)) == Got::kNothingYet) {
      }
      return got;
    };
    ASSERT_EQ(next(), Got::kLine);
    EXPECT_EQ(length, big.size());
    EXPECT_EQ(line, big.substr(0, LineReader::kKept));
    ASSERT_EQ(next(), Got::kLine);
    EXPECT_EQ(line, "ok");
    ASSERT_EQ(next(), Got::kLine);
    EXPECT_EQ(length, limit + 1);
    EXPECT_EQ(line, std::string(LineReader::kKept, 'y'));
    ASSERT_EQ(next(), Got::kLine);  // at the limit: whole
    EXPECT_EQ(length, limit);
    EXPECT_EQ(line, std::string(limit, 'z'));
    ASSERT_EQ(next(), Got::kLine);  // over it, at the end, with no newline
    EXPECT_EQ(length, big.size());
    EXPECT_EQ(line, big.substr(0, LineReader::kKept));
    EXPECT_EQ(next(), Got::kEnd);
    writer.join();
  }
}

std::atomic<int> g_signals{0};

// A signal ends a wait, also with the handler std::signal installs (which
// restarts read(2), as std::getline used it: an idle pipe held SIGTERM off).
TEST(LineReader, ASignalEndsAWait) {
  auto old = std::signal(SIGUSR1, [](int) { ++g_signals; });
  Pipe p;
  pthread_t reader_thread = pthread_self();
  std::atomic<bool> returned{false};
  std::thread signaller([&] {
    for (int i = 0; i < 300 && !returned; ++i) {  // until it returns: 30 s at most
      pthread_kill(reader_thread, SIGUSR1);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (!returned) p.Write("unblocked by the test\n");
  });
  LineReader r(p.fd[0], 100);
  std::string line;
  size_t length = 0;
  Got got = r.Next(&line, &length, -1);  // no time limit: only a signal ends it
  returned = true;
  signaller.join();
  std::signal(SIGUSR1, old);
  EXPECT_EQ(got, Got::kNothingYet) << line;
  EXPECT_GE(g_signals.load(), 1);
}

TEST(LineReader, AReadErrorIsAnError) {
  int dir = ::open("/", O_RDONLY | O_DIRECTORY);
  ASSERT_GE(dir, 0);
  LineReader r(dir, 100);
  std::string line;
  size_t length = 0;
  EXPECT_EQ(r.Next(&line, &length, 0), Got::kError);
  EXPECT_EQ(r.error(), EISDIR);
  ::close(dir);
}

}  // namespace
}  // namespace waymark
