#include "gateway/session_index.h"

#include <map>

#include <algorithm>
#include <atomic>
#include <thread>

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

TEST(SessionIndex, CountsSessionsByAppTransportAndProtocolAsTheyComeAndGo) {
  SessionIndex index;
  auto rec = [](const std::string& client, const std::string& app, const std::string& transport,
                const std::string& protocol, const std::string& name) {
    v1::SessionRecord r = Record(client, app, "u-" + client);
    r.set_transport(transport);
    r.set_protocol(protocol);
    r.set_app_name(name);  // client-chosen: never part of the kind
    return r;
  };
  ASSERT_TRUE(index.Add(rec("a", "demo", "websocket", "json", "x"), 1));
  ASSERT_TRUE(index.Add(rec("b", "demo", "websocket", "json", "y"), 2));
  ASSERT_TRUE(index.Add(rec("c", "demo", "websocket", "protobuf", "x"), 3));
  ASSERT_TRUE(index.Add(rec("d", "other", "uni_http_stream", "json", "z"), 4));
  auto counts = [&index] {
    std::map<std::string, uint32_t> out;
    for (const auto& k : index.CountsByKind()) out[k.app_id + "/" + k.transport + "/" + k.protocol] = k.sessions;
    return out;
  };
  EXPECT_EQ(counts(), (std::map<std::string, uint32_t>{{"demo/websocket/json", 2},
                                                       {"demo/websocket/protobuf", 1},
                                                       {"other/uni_http_stream/json", 1}}));
  EXPECT_TRUE(index.Remove("a"));
  EXPECT_TRUE(index.Remove("d"));
  EXPECT_EQ(counts(), (std::map<std::string, uint32_t>{{"demo/websocket/json", 1}, {"demo/websocket/protobuf", 1}}));
  EXPECT_TRUE(index.Remove("b"));
  EXPECT_TRUE(index.Remove("c"));
  EXPECT_TRUE(index.CountsByKind().empty());
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
  EXPECT_FALSE(index.Find("a").has_value());
  EXPECT_EQ(index.ConnOf("a"), 0u);
  EXPECT_EQ(index.ClientsOf("demo", "42"), (std::vector<std::string>{"b"}));
  EXPECT_TRUE(index.Remove("b"));
  EXPECT_EQ(index.user_count(), 0u);
  EXPECT_EQ(index.size(), 0u);
  EXPECT_TRUE(index.All().empty());
}

TEST(SessionIndex, UserStaysFindableWhileAnyOfItsSessionsIs) {
  // The per-user entry is keyed by a view into one session's user ID; taking
  // that session away must not leave the others unreachable (or the key
  // dangling: ASan checks this in the sanitizer build).
  SessionIndex index;
  index.Add(Record("a", "demo", "user-with-a-long-id-beyond-sso-0001"), 1);
  index.Add(Record("b", "demo", "user-with-a-long-id-beyond-sso-0001"), 2);
  index.Add(Record("c", "demo", "user-with-a-long-id-beyond-sso-0001"), 3);
  EXPECT_TRUE(index.Remove("a"));
  EXPECT_EQ(Sorted(index.ClientsOf("demo", "user-with-a-long-id-beyond-sso-0001")),
            (std::vector<std::string>{"b", "c"}));
  index.Add(Record("d", "demo", "user-with-a-long-id-beyond-sso-0001"), 4);
  EXPECT_TRUE(index.Remove("b"));
  EXPECT_TRUE(index.Remove("c"));
  EXPECT_EQ(index.ClientsOf("demo", "user-with-a-long-id-beyond-sso-0001"), (std::vector<std::string>{"d"}));
  EXPECT_EQ(index.user_count(), 1u);
  EXPECT_TRUE(index.Remove("d"));
  EXPECT_EQ(index.user_count(), 0u);
}

TEST(SessionIndex, AppAndUserDoNotCollide) {
  // ("ab","c") and ("a","bc") are different users.
  SessionIndex index;
  index.Add(Record("x", "ab", "c"), 1);
  index.Add(Record("y", "a", "bc"), 2);
  EXPECT_EQ(index.ClientsOf("ab", "c"), (std::vector<std::string>{"x"}));
  EXPECT_EQ(index.ClientsOf("a", "bc"), (std::vector<std::string>{"y"}));
}

TEST(SessionIndex, RecordsComeBackWhole) {
  SessionIndex index;
  v1::SessionRecord r = Record("c1", "demo", "42");
  r.set_app_name("web");
  r.set_app_version("1.2.3");
  r.set_transport("websocket");
  r.set_protocol("json");
  r.set_meta_json("{\"device\":\"laptop\"}");
  r.set_connected_at_ms(1764000000123);
  r.set_remote_addr("192.0.2.7");
  r.set_gateway_id("gw-1");
  ASSERT_TRUE(index.Add(r, 9));
  auto found = index.Find("c1");
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->SerializeAsString(), r.SerializeAsString());
  auto all = index.All();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].SerializeAsString(), r.SerializeAsString());
}

TEST(SessionIndex, SharedStringsAreKeptOnceAndDroppedWithTheLastSession) {
  SessionIndex index;
  for (int i = 0; i < 100; ++i) {
    v1::SessionRecord r = Record("c" + std::to_string(i), "demo", "u" + std::to_string(i % 10));
    r.set_app_name("web");
    r.set_app_version(i == 0 ? "rare-version" : "1.0");
    r.set_transport("websocket");
    r.set_gateway_id("gw-1");
    index.Add(r, static_cast<ConnId>(i + 1));
  }
  // demo, web, 1.0, rare-version, websocket, gw-1, "" (protocol, address)
  EXPECT_EQ(index.interned_strings(), 7u);
  EXPECT_EQ(index.profiles(), 2u);  // web 1.0 and web rare-version
  EXPECT_TRUE(index.Remove("c0"));
  EXPECT_EQ(index.interned_strings(), 6u);  // rare-version went with its only session
  EXPECT_EQ(index.profiles(), 1u);
  EXPECT_EQ(index.ClientsOf("demo", "u3").size(), 10u);
  for (int i = 1; i < 100; ++i) index.Remove("c" + std::to_string(i));
  EXPECT_EQ(index.interned_strings(), 0u);
  EXPECT_EQ(index.profiles(), 0u);
  EXPECT_EQ(index.user_count(), 0u);
  EXPECT_TRUE(index.ClientsOf("demo", "u3").empty());
}

TEST(SessionIndex, SessionsOfReadsWholeRecordsWhileTheLoopChangesTheIndex) {
  // The gateway answers queries on a bus thread while the loop adds and
  // removes sessions: every answer must be a set of whole records of that
  // user, each of which existed (run under ASan in the sanitizer build).
  SessionIndex index;
  ASSERT_TRUE(index.Add(Record("stay", "demo", "42"), 1));
  std::atomic<bool> done{false};
  std::atomic<int> answers{0};
  std::atomic<int> bad{0};
  std::thread reader([&] {
    while (!done.load()) {
      for (const auto& r : index.SessionsOf("demo", "42")) {
        if (r.user_id() != "42" || r.app_id() != "demo" || r.client_id().empty()) bad.fetch_add(1);
      }
      if (index.SessionsOf("demo", "42").empty()) bad.fetch_add(1);  // "stay" never leaves
      answers.fetch_add(1);
    }
  });
  for (int round = 0; round < 2000; ++round) {
    const std::string id = "c" + std::to_string(round % 7);
    index.Add(Record(id, "demo", round % 2 ? "42" : "43"), 2 + round);
    index.Remove(id);
  }
  // The writer ends first; the reader keeps going until it has read at least
  // once more (a condition, not a sleep).
  const int seen = answers.load();
  while (answers.load() < seen + 1) std::this_thread::yield();
  done = true;
  reader.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GT(answers.load(), 0);
  auto left = index.SessionsOf("demo", "42");
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0].client_id(), "stay");
  EXPECT_TRUE(index.SessionsOf("nope", "42").empty());
}

}  // namespace
}  // namespace switchboard::gateway
