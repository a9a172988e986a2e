// Small file helpers shared by the tests.
#pragma once

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

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

}  // namespace waymark::testing_util
