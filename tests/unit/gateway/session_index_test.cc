#include "gateway/session_index.h"

#include <algorithm>

#include "gtest/gtest.h"

namespace switchboard::gateway {
namespace {

v1::SessionRecord Record(const std::string& client, const std::string& app, const std::string& user) {
  v1::SessionRecord r;
  r.set_client_id(client);
  r.set_app_id(app);
  r.set_user_id(user);
  return r;
}

std::vector<std::string> Sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

TEST(SessionIndex, FindsSessionsByAppAndUser) {
  SessionIndex index;
  EXPECT_TRUE(index.Add(Record("a", "demo", "42"), 1));
  EXPECT_TRUE(index.Add(Record("b", "demo", "42"), 2));
  EXPECT_TRUE(index.Add(Record("c", "demo", "43"), 3));
  EXPECT_TRUE(index.Add(Record("d", "other", "42"), 4));
  EXPECT_EQ(Sorted(index.ClientsOf("demo", "42")), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(index.ClientsOf("other", "42"), (std::vector<std::string>{"d"}));
  EXPECT_TRUE(index.ClientsOf("demo", "44").empty());
  EXPECT_EQ(index.ConnOf("b"), 2u);
  EXPECT_EQ(index.size(), 4u);
  EXPECT_EQ(index.user_count(), 3u);
}

TEST(SessionIndex, RefusesDuplicateClientId) {
  SessionIndex index;
  EXPECT_TRUE(index.Add(Record("a", "demo", "42"), 1));
  EXPECT_FALSE(index.Add(Record("a", "demo", "43"), 2));
  EXPECT_EQ(index.ConnOf("a"), 1u);
  EXPECT_TRUE(index.ClientsOf("demo", "43").empty());
}

TEST(SessionIndex, RemovesClosedSessionAndEmptyUser) {
  SessionIndex index;
  index.Add(Record("a", "demo", "42"), 1);
  index.Add(Record("b", "demo", "42"), 2);
  EXPECT_TRUE(index.Remove("a"));
  EXPECT_FALSE(index.Remove("a"));
  EXPECT_EQ(index.Find("a"), nullptr);
  EXPECT_EQ(index.ConnOf("a"), 0u);
  EXPECT_EQ(index.ClientsOf("demo", "42"), (std::vector<std::string>{"b"}));
  EXPECT_TRUE(index.Remove("b"));
  EXPECT_EQ(index.user_count(), 0u);
  EXPECT_EQ(index.size(), 0u);
  EXPECT_TRUE(index.All().empty());
}

TEST(SessionIndex, AppAndUserDoNotCollide) {
  // ("ab","c") and ("a","bc") are different users.
  SessionIndex index;
  index.Add(Record("x", "ab", "c"), 1);
  index.Add(Record("y", "a", "bc"), 2);
  EXPECT_EQ(index.ClientsOf("ab", "c"), (std::vector<std::string>{"x"}));
  EXPECT_EQ(index.ClientsOf("a", "bc"), (std::vector<std::string>{"y"}));
}

}  // namespace
}  // namespace switchboard::gateway
