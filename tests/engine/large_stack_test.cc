// RunOnLargeStack: the call runs on a stack that holds what an ordinary
// one does not, and what it throws reaches the caller (thrown on the
// thread's own stack, it ended the process).
#include "engine/base/large_stack.h"

#include <regex>
#include <stdexcept>
#include <string>

#include <gtest/gtest.h>

namespace waymark {
namespace {

TEST(LargeStack, AMatchAnOrdinaryStackCannotHoldRuns) {
  // std::regex recurses once per character: 1,000,000 of them need some
  // hundreds of MiB of stack.
  std::string text(1000000, 'a');
  bool matched = false;
  RunOnLargeStack([&] { matched = std::regex_match(text, std::regex("^[a-z]+$")); });
  EXPECT_TRUE(matched);
}

TEST(LargeStack, WhatTheCallThrowsReachesTheCaller) {
  EXPECT_THROW(RunOnLargeStack([] { throw std::runtime_error("from the large stack"); }),
               std::runtime_error);
}

}  // namespace
}  // namespace waymark
