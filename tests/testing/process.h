// Running a command line from a test.
#pragma once

#include <cstdio>
#include <string>

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

}  // namespace waymark::testing_util
