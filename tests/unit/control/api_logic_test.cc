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

}  // namespace
}  // namespace switchboard::control
