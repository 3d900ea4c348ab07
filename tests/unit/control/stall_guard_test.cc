#include "control/stall_guard.h"

#include "gtest/gtest.h"

namespace switchboard::control {
namespace {

const absl::Time kWall0 = absl::FromUnixSeconds(1'800'000'000);
const absl::Duration kMono0 = absl::Hours(100);
const absl::Duration kLease = absl::Seconds(3);
const absl::Duration kMaxGap = absl::Seconds(2);

// Ticks every 500 ms from `from` (seconds after start) to `to`, the wall
// clock `skew` seconds off the monotonic one.
void TickSteadily(StallGuard* g, double from, double to, double skew = 0) {
  for (double t = from; t <= to; t += 0.5) {
    EXPECT_FALSE(g->Tick(kWall0 + absl::Seconds(t + skew), kMono0 + absl::Seconds(t))) << t;
  }
}

TEST(StallGuard, NotReadyForTheFirstLeaseThenReady) {
  StallGuard g(kLease, kMaxGap, kWall0, kMono0);
  TickSteadily(&g, 0.5, 2.5);
  EXPECT_NE(g.NotReady(kWall0 + absl::Seconds(2.5), kMono0 + absl::Seconds(2.5)).find("started"),
            std::string::npos);
  TickSteadily(&g, 3, 4);
  EXPECT_EQ(g.NotReady(kWall0 + absl::Seconds(4), kMono0 + absl::Seconds(4)), "");
}

TEST(StallGuard, AStoppedProcessIsNotReadyBeforeAndForALeaseAfterItsSweeperNotices) {
  StallGuard g(kLease, kMaxGap, kWall0, kMono0);
  TickSteadily(&g, 0.5, 10);
  // SIGSTOP for 5 s: the first thread to run after it (a call) already knows.
  const absl::Time wall = kWall0 + absl::Seconds(15);
  const absl::Duration mono = kMono0 + absl::Seconds(15);
  EXPECT_NE(g.NotReady(wall, mono).find("did not run for 5s"), std::string::npos);
  EXPECT_TRUE(g.Tick(wall, mono));
  // For one lease from then, whatever the sweeper sees next.
  TickSteadily(&g, 15.5, 17.5);
  EXPECT_NE(g.NotReady(kWall0 + absl::Seconds(17.5), kMono0 + absl::Seconds(17.5)).find("renewed"),
            std::string::npos);
  TickSteadily(&g, 18, 18.5);
  EXPECT_EQ(g.NotReady(kWall0 + absl::Seconds(18.5), kMono0 + absl::Seconds(18.5)), "");
}

TEST(StallGuard, AShortGapIsNotAStall) {
  StallGuard g(kLease, kMaxGap, kWall0, kMono0);
  TickSteadily(&g, 0.5, 10);
  EXPECT_FALSE(g.Tick(kWall0 + absl::Seconds(11.9), kMono0 + absl::Seconds(11.9)));
  EXPECT_EQ(g.NotReady(kWall0 + absl::Seconds(12), kMono0 + absl::Seconds(12)), "");
}

TEST(StallGuard, AWallClockJumpEitherWayCountsAsAStall) {
  StallGuard g(kLease, kMaxGap, kWall0, kMono0);
  TickSteadily(&g, 0.5, 10);
  // Forward by a minute between two ticks half a second apart.
  EXPECT_NE(g.NotReady(kWall0 + absl::Seconds(70.5), kMono0 + absl::Seconds(10.5)).find("jump"),
            std::string::npos);
  EXPECT_TRUE(g.Tick(kWall0 + absl::Seconds(70.5), kMono0 + absl::Seconds(10.5)));
  TickSteadily(&g, 11, 13, 60);
  EXPECT_NE(g.NotReady(kWall0 + absl::Seconds(73), kMono0 + absl::Seconds(13)), "");
  TickSteadily(&g, 13.5, 14, 60);
  EXPECT_EQ(g.NotReady(kWall0 + absl::Seconds(74), kMono0 + absl::Seconds(14)), "");
  // Backward by a minute.
  EXPECT_TRUE(g.Tick(kWall0 + absl::Seconds(14.5), kMono0 + absl::Seconds(14.5)));
  EXPECT_NE(g.NotReady(kWall0 + absl::Seconds(15), kMono0 + absl::Seconds(15)), "");
}

}  // namespace
}  // namespace switchboard::control
