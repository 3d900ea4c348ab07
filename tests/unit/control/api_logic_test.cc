#include "control/api_logic.h"

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace switchboard::control {
namespace {

v1::BusReply Answer(const std::string& gw, std::vector<std::string> client_ids) {
  v1::BusReply r;
  r.set_gateway_id(gw);
  for (auto& id : client_ids) r.add_sessions()->set_client_id(id);
  return r;
}

// One page over two gateways' answers (each already cut to page_size + 1 of
// its own, as gateways do).
v1::UserConnectionsResult Page(const std::map<std::string, std::vector<std::string>>& by_gateway,
                               uint32_t page_size, const std::string& token) {
  auto cursor = PageCursor(token);
  EXPECT_TRUE(cursor.ok());
  GatherResult g;
  g.complete = true;
  for (const auto& [gw, ids] : by_gateway) {
    std::vector<std::string> after;
    for (const auto& id : ids) {
      if (id > *cursor) after.push_back(id);
    }
    std::sort(after.begin(), after.end());
    if (page_size > 0 && after.size() > page_size + 1) after.resize(page_size + 1);
    g.answers[gw] = Answer(gw, after);
  }
  v1::UserConnectionsResponse out;
  FillUserConnections(g, &out, page_size, *cursor);
  return out.result();
}

TEST(UserConnectionsPages, EveryConnectionOnceInClientIdOrderAcrossGateways) {
  std::map<std::string, std::vector<std::string>> fleet = {{"gw-1", {"a", "c", "e", "g"}},
                                                           {"gw-2", {"b", "d", "f"}}};
  std::vector<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    auto page = Page(fleet, 3, token);
    EXPECT_LE(page.connections_size(), 3);
    for (const auto& [id, info] : page.connections()) seen.push_back(id);
    token = page.next_page_token();
    ++pages;
  } while (!token.empty() && pages < 10);
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(seen, (std::vector<std::string>{"a", "b", "c", "d", "e", "f", "g"}));
  EXPECT_EQ(pages, 3);
}

TEST(UserConnectionsPages, ConnectionsOpenThroughoutAreListedOnceWhateverChangesMeanwhile) {
  std::map<std::string, std::vector<std::string>> fleet = {{"gw-1", {"b", "d", "f", "h"}}, {"gw-2", {"c", "e"}}};
  auto first = Page(fleet, 3, "");
  std::set<std::string> seen;
  for (const auto& [id, info] : first.connections()) seen.insert(id);
  // Between pages: "c" closes, "a" and "z" open, "e" moves nowhere.
  fleet = {{"gw-1", {"a", "b", "d", "f", "h", "z"}}, {"gw-2", {"e"}}};
  auto second = Page(fleet, 3, first.next_page_token());
  for (const auto& [id, info] : second.connections()) EXPECT_TRUE(seen.insert(id).second) << "twice: " << id;
  auto third = Page(fleet, 3, second.next_page_token());
  for (const auto& [id, info] : third.connections()) EXPECT_TRUE(seen.insert(id).second) << "twice: " << id;
  EXPECT_TRUE(third.next_page_token().empty());
  for (const char* always : {"b", "d", "e", "f", "h"}) EXPECT_EQ(seen.count(always), 1u) << always;
}

TEST(UserConnectionsPages, NoPageSizeIsEverythingAndABadTokenIsInvalid) {
  auto all = Page({{"gw-1", {"x", "y"}}}, 0, "");
  EXPECT_EQ(all.connections_size(), 2);
  EXPECT_TRUE(all.next_page_token().empty());
  EXPECT_EQ(PageCursor("!!!").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PageCursor(std::string(1000, 'A')).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(PusherEvents, DataTextReachesPusherClientsAsItCameAndOtherClientsAsJson) {
  v1::Config config;
  config.mutable_control()->set_max_send_bytes(1000);
  config.add_apps()->set_id("demo");
  struct Case {
    std::string data, data_json;
    bool verbatim;
  };
  for (const Case& c : {Case{R"({"a":1})", R"({"a":1})", true}, Case{"123", "123", true},
                        Case{R"("123")", R"("123")", true}, Case{"plain text", R"("plain text")", false},
                        Case{"{not json", R"("{not json")", false}}) {
    v1::PusherTriggerRequest r;
    r.set_app_id("demo");
    r.set_name("e");
    r.set_channel("#server-to-user-42");
    r.set_data(c.data);
    auto reqs = PusherTriggerRequests(config, r);
    ASSERT_TRUE(reqs.ok()) << c.data << ": " << reqs.status();
    ASSERT_EQ(reqs->size(), 1u);
    const auto& s = reqs->front().send();
    EXPECT_EQ(s.user_id(), "42");
    EXPECT_EQ(s.data_json(), c.data_json) << c.data;
    EXPECT_EQ(s.pusher_text_verbatim(), c.verbatim) << c.data;
  }
}

// Centrifugo's broadcast answers each channel in its place: a personal
// channel is sent, any other (or an empty one, or one whose user ID cannot
// be) gets Centrifugo's error for it; only what concerns the whole call fails
// it.
TEST(CentrifugoBroadcast, EachChannelIsSentOrGetsItsOwnErrorInItsPlace) {
  v1::Config config;
  config.mutable_control()->set_max_send_bytes(1000);
  config.set_default_app("demo");
  config.add_apps()->set_id("demo");
  google::protobuf::Value data;
  data.set_number_value(7);
  auto plan = CentrifugoBroadcastRequests(config, {"news", "#42", "", "#" + std::string(300, 'u'), "#43"}, data, "");
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->size(), 5u);
  std::vector<uint32_t> codes;
  std::vector<std::string> users;
  for (const auto& ch : *plan) {
    codes.push_back(ch.error.code());
    EXPECT_EQ(ch.request.has_value(), ch.error.code() == 0);
    if (ch.request.has_value()) users.push_back(ch.request->send().user_id());
  }
  EXPECT_EQ(codes, (std::vector<uint32_t>{102, 0, 107, 107, 0}));
  EXPECT_EQ(users, (std::vector<std::string>{"42", "43"}));
  EXPECT_NE(plan->front().error.message().find("news"), std::string::npos);
  // The call's own errors.
  EXPECT_EQ(CentrifugoBroadcastRequests(config, {}, data, "").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CentrifugoBroadcastRequests(config, {"#42"}, data, "eA==").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CentrifugoBroadcastRequests(config, std::vector<std::string>(1001, "#42"), data, "").status().code(),
            absl::StatusCode::kInvalidArgument);
  // Publish: one channel, its error is the call's.
  EXPECT_EQ(CentrifugoPublishRequest(config, "news", data, "").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(CentrifugoPublishRequest(config, "", data, "").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CentrifugoPublishRequest(config, "#42", data, "")->send().user_id(), "42");
}

}  // namespace
}  // namespace switchboard::control
