// Running a command line from a test.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace waymark::testing_util {

// Runs `cmd` through the shell; returns its standard output and sets
// `*status` to its wait status (0: exited 0).
inline std::string Shell(const std::string& cmd, int* status) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) {
    *status = -1;
    return out;
  }
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  *status = pclose(p);
  return out;
}

// Starts `args` (argv[0] a path) with stderr to the file `errors` if one is
// named, and stdout to the file `output` if one is named, else /dev/null.
inline pid_t Spawn(const std::vector<std::string>& args, const std::string& errors = "",
                   const std::string& output = "") {
  pid_t pid = fork();
  if (pid == 0) {
    if (output.empty()) {
      dup2(::open("/dev/null", O_WRONLY), 1);
    } else {
      dup2(::open(output.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644), 1);
    }
    if (!errors.empty()) dup2(::open(errors.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644), 2);
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

// Kills (SIGKILL) and waits for the child `pid` names when it goes out of
// scope, however the test ends; a test that waited for the child itself
// sets `pid` to 0.
class KillOnExit {
 public:
  explicit KillOnExit(pid_t& pid) : pid_(pid) {}
  ~KillOnExit() {
    if (pid_ > 0 && kill(pid_, SIGKILL) == 0) waitpid(pid_, nullptr, 0);
  }
  KillOnExit(const KillOnExit&) = delete;
  KillOnExit& operator=(const KillOnExit&) = delete;

 private:
  pid_t& pid_;
};

// `cmd` run by the shell in the background (its output redirected by
// `cmd` itself), stopped with SIGTERM and waited for (60 s at most, then
// SIGKILL) by Stop or, however the test ends, when this goes.
class Background {
 public:
  explicit Background(const std::string& cmd) {
    int status = 0;
    pid_ = std::atoi(Shell(cmd + " & echo $!", &status).c_str());
  }
  ~Background() { Stop(); }
  Background(const Background&) = delete;
  Background& operator=(const Background&) = delete;
  int pid() const { return pid_; }
  void Stop() {
    if (pid_ <= 0) return;
    int status = 0;
    std::string p = std::to_string(pid_);
    // 60 s to stop, then SIGKILL: a test must end even if the process hangs.
    Shell("kill -TERM " + p + "; i=0; while kill -0 " + p + " 2>/dev/null && [ $i -lt 600 ]; do " +
              "sleep 0.1; i=$((i+1)); done; kill -KILL " + p + " 2>/dev/null",
          &status);
    pid_ = 0;
  }

 private:
  int pid_ = 0;
};

// Sends SIGTERM to the child `pid` and waits up to `seconds` for it: its
// wait status, or -1 when it was still running (it is then SIGKILLed and
// waited for).
inline int TerminateWithin(pid_t pid, int seconds) {
  kill(pid, SIGTERM);
  int status = 0;
  for (int i = 0; i < seconds * 10; ++i) {
    if (waitpid(pid, &status, WNOHANG) == pid) return status;
    usleep(100'000);
  }
  if (waitpid(pid, &status, WNOHANG) == pid) return status;
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return -1;
}

inline int RunToEnd(const std::vector<std::string>& args) {
  int status = 0;
  waitpid(Spawn(args), &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace waymark::testing_util
