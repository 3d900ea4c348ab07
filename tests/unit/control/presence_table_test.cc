#include "control/presence_table.h"

#include <algorithm>

#include "gtest/gtest.h"

namespace switchboard::control {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1'800'000'000);

TEST(PresenceTable, AGatewayIsPresentForALeaseAfterItWasLastHeard) {
  PresenceTable t(absl::Seconds(3));
  t.Seen("gw-b", kT0);
  t.Seen("gw-a", kT0 + absl::Seconds(1));
  EXPECT_EQ(t.PresentIds(kT0 + absl::Seconds(2)), (std::vector<std::string>{"gw-a", "gw-b"}));
  EXPECT_TRUE(t.Expire(kT0 + absl::Seconds(2)).empty());
  // gw-b's lease ran out: reported once by the sweep, no longer asked.
  EXPECT_EQ(t.Expire(kT0 + absl::Seconds(3)), std::vector<std::string>{"gw-b"});
  EXPECT_TRUE(t.Expire(kT0 + absl::Seconds(3.5)).empty());
  EXPECT_EQ(t.PresentIds(kT0 + absl::Seconds(3.5)), std::vector<std::string>{"gw-a"});
  EXPECT_FALSE(t.Present("gw-b", kT0 + absl::Seconds(3.5)));
  // Heard again: present again, and its next silence is reported again.
  t.Seen("gw-b", kT0 + absl::Seconds(4));
  EXPECT_TRUE(t.Present("gw-b", kT0 + absl::Seconds(4)));
  auto expired = t.Expire(kT0 + absl::Seconds(7));
  std::sort(expired.begin(), expired.end());
  EXPECT_EQ(expired, (std::vector<std::string>{"gw-a", "gw-b"}));
}

TEST(PresenceTable, LeavingEndsPresenceAtOnce) {
  PresenceTable t(absl::Seconds(3));
  t.Seen("gw-a", kT0);
  t.Left("gw-a");
  EXPECT_FALSE(t.Present("gw-a", kT0));
  EXPECT_TRUE(t.PresentIds(kT0).empty());
  EXPECT_TRUE(t.Expire(kT0 + absl::Seconds(5)).empty());
}

TEST(PresenceTable, RenewingAfterAStallKeepsThoseNotYetExpired) {
  PresenceTable t(absl::Seconds(3));
  t.Seen("gw-a", kT0);
  // This replica did not run from kT0 to kT0 + 10 s; the sweep renews first.
  t.RenewAll(kT0 + absl::Seconds(10));
  EXPECT_TRUE(t.Expire(kT0 + absl::Seconds(10)).empty());
  EXPECT_EQ(t.PresentIds(kT0 + absl::Seconds(12)), std::vector<std::string>{"gw-a"});
}

TEST(PresenceTable, SaysWhenAGatewayIsNewOrBackOnTheBus) {
  PresenceTable t(absl::Seconds(3));
  EXPECT_TRUE(t.Seen("gw-a", kT0, 1));                          // new here
  EXPECT_FALSE(t.Seen("gw-a", kT0 + absl::Seconds(1), 1));      // the same bus session
  EXPECT_TRUE(t.Seen("gw-a", kT0 + absl::Seconds(2), 2));       // reconnected to the bus
  EXPECT_FALSE(t.Seen("gw-a", kT0 + absl::Seconds(3), 2));
}

}  // namespace
}  // namespace switchboard::control
