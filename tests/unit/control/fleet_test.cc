#include "control/fleet.h"

#include "gtest/gtest.h"

namespace switchboard::control {
namespace {

v1::GatewayHello Hello(const std::string& id) {
  v1::GatewayHello h;
  h.set_gateway_id(id);
  return h;
}

const absl::Time kT0 = absl::FromUnixSeconds(1'800'000'000);

TEST(Fleet, SecondAttachWithALiveIdIsRefusedNotAReplacement) {
  Fleet fleet(absl::Seconds(3));
  int evicted = 0;
  uint64_t first = fleet.Attach(Hello("gw-1"), kT0, [&](const char*) { ++evicted; });
  ASSERT_NE(first, 0u);
  EXPECT_EQ(fleet.Attach(Hello("gw-1"), kT0 + absl::Seconds(1), [](const char*) {}), 0u);
  // The intruder hanging up changes nothing: it never had a token.
  EXPECT_EQ(fleet.LiveIds(kT0 + absl::Seconds(1)), std::vector<std::string>{"gw-1"});
  EXPECT_EQ(evicted, 0);
}

// Commands go on the commands subject only if every gateway asked is a live
// member whose last load report says its loop reads it: a stranger, a
// member that said nothing (an older gateway) or said no, or one whose lease
// ran out, each keeps the gateways subject.
TEST(Fleet, AllReadCommandsOnlyWhenEveryAskedMemberLastSaidSo) {
  Fleet fleet(absl::Seconds(3));
  const uint64_t t1 = fleet.Attach(Hello("gw-1"), kT0, [](const char*) {});
  const uint64_t t2 = fleet.Attach(Hello("gw-2"), kT0, [](const char*) {});
  v1::GatewayLoad reads;
  reads.set_commands_on_loop(true);
  const std::vector<std::string> both = {"gw-1", "gw-2"};
  EXPECT_FALSE(fleet.AllReadCommands(both, kT0));  // no report yet
  fleet.ApplyLoad("gw-1", t1, reads);
  EXPECT_TRUE(fleet.AllReadCommands({"gw-1"}, kT0));
  EXPECT_FALSE(fleet.AllReadCommands(both, kT0));
  fleet.ApplyLoad("gw-2", t2, reads);
  EXPECT_TRUE(fleet.AllReadCommands(both, kT0));
  EXPECT_FALSE(fleet.AllReadCommands({"gw-1", "gw-stranger"}, kT0));
  EXPECT_FALSE(fleet.AllReadCommands({}, kT0));
  fleet.ApplyLoad("gw-2", t2, v1::GatewayLoad());  // its loop connection went down
  EXPECT_FALSE(fleet.AllReadCommands(both, kT0));
  fleet.ApplyLoad("gw-2", t2 + 100, reads);  // not its attachment's token: ignored
  EXPECT_FALSE(fleet.AllReadCommands(both, kT0));
  // Past its lease: no longer believed.
  EXPECT_FALSE(fleet.AllReadCommands({"gw-1"}, kT0 + absl::Seconds(4)));
}

TEST(Fleet, LeaseRunsOutWithoutMessagesAndIsRenewedByThem) {
  Fleet fleet(absl::Seconds(3));
  int evicted = 0;
  uint64_t t = fleet.Attach(Hello("gw-1"), kT0, [&](const char*) { ++evicted; });
  fleet.Renew("gw-1", t, kT0 + absl::Seconds(2));
  EXPECT_EQ(fleet.Expire(kT0 + absl::Seconds(4)), 0u);
  EXPECT_EQ(fleet.LiveIds(kT0 + absl::Seconds(4)).size(), 1u);
  // Silent past the lease: not live at once, evicted (stream ended) by the sweep.
  EXPECT_TRUE(fleet.LiveIds(kT0 + absl::Seconds(5)).empty());
  EXPECT_EQ(fleet.Expire(kT0 + absl::Seconds(5)), 1u);
  EXPECT_EQ(evicted, 1);
  EXPECT_TRUE(fleet.List(kT0 + absl::Seconds(5)).empty());
}

TEST(Fleet, ASilentMemberCanBeTakenOverAndItsOldStreamEnds) {
  Fleet fleet(absl::Seconds(3));
  int old_evicted = 0;
  uint64_t old_token = fleet.Attach(Hello("gw-1"), kT0, [&](const char*) { ++old_evicted; });
  uint64_t fresh = fleet.Attach(Hello("gw-1"), kT0 + absl::Seconds(4), [](const char*) {});
  ASSERT_NE(fresh, 0u);
  EXPECT_EQ(old_evicted, 1);
  // The old stream's late detach does not remove the new member.
  fleet.Detach("gw-1", old_token);
  EXPECT_EQ(fleet.LiveIds(kT0 + absl::Seconds(4)), std::vector<std::string>{"gw-1"});
}

TEST(Fleet, DetachWithTheRightTokenLeaves) {
  Fleet fleet(absl::Seconds(3));
  uint64_t t = fleet.Attach(Hello("gw-1"), kT0, [](const char*) {});
  fleet.Detach("gw-1", t);
  EXPECT_TRUE(fleet.LiveIds(kT0).empty());
  EXPECT_NE(fleet.Attach(Hello("gw-1"), kT0, [](const char*) {}), 0u);
}

TEST(Fleet, LeavingIsReportedOnDetachAndExpiryButNotOnTakeover) {
  Fleet fleet(absl::Seconds(3));
  std::vector<std::string> left;
  fleet.set_on_leave([&left](const std::string& id) { left.push_back(id); });
  uint64_t t1 = fleet.Attach(Hello("gw-1"), kT0, [](const char*) {});
  fleet.Attach(Hello("gw-2"), kT0, [](const char*) {});
  fleet.Renew("gw-2", 2, kT0 + absl::Seconds(2));
  fleet.Detach("gw-1", t1 + 100);  // not its token: stays
  EXPECT_TRUE(left.empty());
  fleet.Detach("gw-1", t1);
  EXPECT_EQ(left, std::vector<std::string>{"gw-1"});
  // Taken over by the same ID: the gateway is still there.
  fleet.Attach(Hello("gw-2"), kT0 + absl::Seconds(6), [](const char*) {});
  EXPECT_EQ(left, std::vector<std::string>{"gw-1"});
  fleet.Expire(kT0 + absl::Seconds(10));
  EXPECT_EQ(left, (std::vector<std::string>{"gw-1", "gw-2"}));
}

TEST(Fleet, RenewingEveryLeaseKeepsSilentMembersAfterAStall) {
  Fleet fleet(absl::Seconds(3));
  fleet.Attach(Hello("gw-1"), kT0, [](const char*) {});
  // This replica did not run from kT0 to kT0 + 10 s; it renews first.
  fleet.RenewAll(kT0 + absl::Seconds(10));
  EXPECT_EQ(fleet.Expire(kT0 + absl::Seconds(10)), 0u);
  EXPECT_EQ(fleet.LiveIds(kT0 + absl::Seconds(12)), std::vector<std::string>{"gw-1"});
  EXPECT_EQ(fleet.Expire(kT0 + absl::Seconds(13)), 1u);
}

TEST(Fleet, AnswerKeysOutliveTheAttachmentForAWhile) {
  Fleet fleet(absl::Seconds(3));
  v1::GatewayHello hello = Hello("gw-1");
  hello.set_signs_answers(true);
  uint64_t t = fleet.Attach(hello, kT0, [](const char*) {}, "key-1");
  EXPECT_EQ(fleet.AnswerKeys("gw-1", kT0), std::vector<std::string>{"key-1"});
  EXPECT_FALSE(fleet.AcceptsUnsigned("gw-1", kT0));
  // Cut from this replica: its key still authenticates its answers.
  fleet.Detach("gw-1", t, kT0);
  EXPECT_EQ(fleet.AnswerKeys("gw-1", kT0 + absl::Seconds(1)), std::vector<std::string>{"key-1"});
  // Back with a new key: both, the current one first.
  fleet.Attach(hello, kT0 + absl::Seconds(2), [](const char*) {}, "key-2");
  EXPECT_EQ(fleet.AnswerKeys("gw-1", kT0 + absl::Seconds(2)), (std::vector<std::string>{"key-2", "key-1"}));
  EXPECT_EQ(fleet.AnswerKeys("gw-1", kT0 + Fleet::kKeysKeptFor + absl::Seconds(1)),
            std::vector<std::string>{"key-2"});
  EXPECT_TRUE(fleet.AnswerKeys("gw-2", kT0).empty());
}

TEST(Fleet, UnsignedAnswersOnlyFromALiveMemberThatSaidItDoesNotSign) {
  Fleet fleet(absl::Seconds(3));
  fleet.Attach(Hello("gw-old"), kT0, [](const char*) {}, "k");
  EXPECT_TRUE(fleet.AcceptsUnsigned("gw-old", kT0));
  EXPECT_FALSE(fleet.AcceptsUnsigned("gw-old", kT0 + absl::Seconds(4)));  // lease ran out
  EXPECT_FALSE(fleet.AcceptsUnsigned("gw-stranger", kT0));
}

TEST(Fleet, ClosingEndsEveryStreamOnceAndRefusesNewMembers) {
  Fleet fleet(absl::Seconds(3));
  int ended_1 = 0, ended_2 = 0;
  uint64_t t1 = fleet.Attach(Hello("gw-1"), kT0, [&](const char*) { ++ended_1; });
  fleet.Attach(Hello("gw-2"), kT0, [&](const char*) { ++ended_2; });
  EXPECT_FALSE(fleet.closed());
  fleet.Close();
  EXPECT_TRUE(fleet.closed());
  EXPECT_EQ(ended_1, 1);
  EXPECT_EQ(ended_2, 1);
  // A gateway coming back (or a new one) is not let in.
  int ended_3 = 0;
  EXPECT_EQ(fleet.Attach(Hello("gw-3"), kT0, [&](const char*) { ++ended_3; }), 0u);
  // Nor is a stream ended twice: not by a second close, nor by the lease.
  fleet.Close();
  fleet.Expire(kT0 + absl::Seconds(10));
  EXPECT_EQ(ended_1, 1);
  EXPECT_EQ(ended_2, 1);
  EXPECT_EQ(ended_3, 0);
  fleet.Detach("gw-1", t1);
  EXPECT_TRUE(fleet.List(kT0 + absl::Seconds(10)).empty());
}

}  // namespace
}  // namespace switchboard::control
