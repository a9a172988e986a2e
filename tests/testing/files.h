// Small file helpers shared by the tests.
#pragma once

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

namespace waymark::testing_util {

// The repository root (tests are built with WAYMARK_SOURCE_DIR defined).
inline const std::filesystem::path& SourceRoot() {
  static const std::filesystem::path root = WAYMARK_SOURCE_DIR;
  return root;
}

// The whole file, bytes as they are; "" when it cannot be read.
inline std::string ReadFile(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Waits up to `seconds` for the file `p` to hold `text`; whether it does.
inline bool WaitForText(const std::filesystem::path& p, const std::string& text, int seconds) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  for (;;) {
    if (ReadFile(p).find(text) != std::string::npos) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace waymark::testing_util
