#include "common/json_depth.h"

#include <string>

#include "gtest/gtest.h"

namespace switchboard {
namespace {

TEST(JsonDepth, CountsNestingOutsideStrings) {
  EXPECT_TRUE(JsonDepthWithin(R"({"a":[1,{"b":[]}]})", 4));
  EXPECT_FALSE(JsonDepthWithin(R"({"a":[1,{"b":[]}]})", 3));
  // Brackets inside strings, escaped quotes included, do not count.
  EXPECT_TRUE(JsonDepthWithin(R"({"a":"[[[[{{{{\"[[[["})", 1));
  EXPECT_TRUE(JsonDepthWithin("", 0));
  EXPECT_TRUE(JsonDepthWithin("42", 0));
}

TEST(JsonDepth, RejectsDeepInputOfAnySize) {
  EXPECT_FALSE(JsonDepthWithin(std::string(1000000, '[')));
  EXPECT_FALSE(JsonDepthWithin(std::string(kMaxJsonDepth + 1, '{')));
  EXPECT_TRUE(JsonDepthWithin(std::string(kMaxJsonDepth, '{')));
  // Unbalanced closers never go below zero.
  EXPECT_TRUE(JsonDepthWithin("]]]]}}}}[[", 2));
}

}  // namespace
}  // namespace switchboard
