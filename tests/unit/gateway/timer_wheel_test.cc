#include "gateway/timer_wheel.h"

#include <algorithm>
#include <map>
#include <vector>

#include "gtest/gtest.h"

namespace switchboard::gateway {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1'800'000'000);

std::vector<ConnId> AdvanceTo(TimerWheel& w, absl::Time t) {
  std::vector<ConnId> fired;
  w.Advance(t, [&](ConnId id) { fired.push_back(id); });
  std::sort(fired.begin(), fired.end());
  return fired;
}

TEST(TimerWheel, FiresNeverEarlyAndAtMostOneTickLate) {
  TimerWheel w(absl::Milliseconds(10), 64, kT0);
  w.Arm(1, kT0 + absl::Milliseconds(25));
  EXPECT_TRUE(AdvanceTo(w, kT0 + absl::Milliseconds(24)).empty());
  EXPECT_TRUE(AdvanceTo(w, kT0 + absl::Milliseconds(29)).empty());
  EXPECT_EQ(AdvanceTo(w, kT0 + absl::Milliseconds(30)), std::vector<ConnId>{1});
  EXPECT_EQ(w.armed(), 0u);
}

TEST(TimerWheel, ReArmAndCancelKeepOnlyTheLatest) {
  TimerWheel w(absl::Milliseconds(10), 64, kT0);
  w.Arm(1, kT0 + absl::Milliseconds(50));
  w.Arm(1, kT0 + absl::Milliseconds(200));  // the 50 ms entry is now stale
  w.Arm(2, kT0 + absl::Milliseconds(50));
  w.Cancel(2);
  EXPECT_TRUE(AdvanceTo(w, kT0 + absl::Milliseconds(100)).empty());
  EXPECT_EQ(AdvanceTo(w, kT0 + absl::Milliseconds(200)), std::vector<ConnId>{1});
}

TEST(TimerWheel, DeadlinesBeyondOneRevolutionWait) {
  TimerWheel w(absl::Milliseconds(10), 8, kT0);  // one revolution = 80 ms
  w.Arm(1, kT0 + absl::Seconds(25));
  for (int ms = 10; ms < 25000; ms += 10) {
    ASSERT_TRUE(AdvanceTo(w, kT0 + absl::Milliseconds(ms)).empty()) << ms;
  }
  EXPECT_EQ(AdvanceTo(w, kT0 + absl::Seconds(25)), std::vector<ConnId>{1});
}

TEST(TimerWheel, ALateLoopFiresEverythingDueOnce) {
  TimerWheel w(absl::Milliseconds(10), 16, kT0);
  for (ConnId id = 1; id <= 100; ++id) w.Arm(id, kT0 + absl::Milliseconds(id * 7));
  // One call, far past every deadline (more than a revolution behind).
  auto fired = AdvanceTo(w, kT0 + absl::Seconds(5));
  EXPECT_EQ(fired.size(), 100u);
  EXPECT_TRUE(AdvanceTo(w, kT0 + absl::Seconds(6)).empty());
}

TEST(TimerWheel, FireMayReArm) {
  TimerWheel w(absl::Milliseconds(10), 64, kT0);
  w.Arm(1, kT0 + absl::Milliseconds(10));
  int fired = 0;
  w.Advance(kT0 + absl::Milliseconds(10), [&](ConnId id) {
    ++fired;
    w.Arm(id, kT0 + absl::Milliseconds(40));
  });
  EXPECT_EQ(fired, 1);
  EXPECT_EQ(AdvanceTo(w, kT0 + absl::Milliseconds(40)), std::vector<ConnId>{1});
}

TEST(TimerWheel, ArmingInThePastFiresOnTheNextTick) {
  TimerWheel w(absl::Milliseconds(10), 64, kT0);
  (void)AdvanceTo(w, kT0 + absl::Milliseconds(100));
  w.Arm(1, kT0);
  EXPECT_EQ(AdvanceTo(w, kT0 + absl::Milliseconds(110)), std::vector<ConnId>{1});
}

TEST(TimerWheel, AtMostMaxFirePerCallTheRestOnTheNextCalls) {
  TimerWheel w(absl::Milliseconds(10), 64, kT0);
  for (ConnId id = 1; id <= 100; ++id) w.Arm(id, kT0 + absl::Milliseconds(10 + (id % 3) * 10));
  w.Arm(500, kT0 + absl::Milliseconds(1000));  // not due yet: must stay
  std::vector<ConnId> fired;
  const absl::Time now = kT0 + absl::Milliseconds(40);
  int calls = 0;
  bool more = true;
  while (more) {
    size_t before = fired.size();
    more = w.Advance(now, [&](ConnId id) { fired.push_back(id); }, 32);
    EXPECT_LE(fired.size() - before, 32u);
    ASSERT_LT(++calls, 10);
  }
  std::sort(fired.begin(), fired.end());
  ASSERT_EQ(fired.size(), 100u);
  for (ConnId id = 1; id <= 100; ++id) EXPECT_EQ(fired[id - 1], id);
  EXPECT_EQ(w.armed(), 1u);
  EXPECT_EQ(AdvanceTo(w, kT0 + absl::Milliseconds(1000)), std::vector<ConnId>{500});
}

TEST(TimerWheel, StampsInTheCallersRecordsAndGoneConnectionsNeverFire) {
  // The gateway keeps each connection's stamp in its own peer record.
  std::map<ConnId, uint32_t> records{{1, 0}, {2, 0}, {3, 0}};
  TimerWheel w(absl::Milliseconds(10), 64, kT0, [&](ConnId id) -> uint32_t* {
    auto it = records.find(id);
    return it == records.end() ? nullptr : &it->second;
  });
  w.Arm(1, kT0 + absl::Milliseconds(20));
  w.Arm(2, kT0 + absl::Milliseconds(20));
  w.Arm(3, kT0 + absl::Milliseconds(20));
  w.Arm(3, kT0 + absl::Milliseconds(20));  // the same tick twice: fires once
  w.Arm(4, kT0 + absl::Milliseconds(20));  // no such connection: nothing
  EXPECT_EQ(w.armed(), 3u);
  EXPECT_NE(records[1], 0u);
  records.erase(2);  // gone without a Cancel (the record held the stamp)
  EXPECT_EQ(AdvanceTo(w, kT0 + absl::Milliseconds(20)), (std::vector<ConnId>{1, 3}));
  EXPECT_EQ(records[1], 0u);
  EXPECT_EQ(records[3], 0u);
  w.Arm(1, kT0 + absl::Milliseconds(60));
  w.Cancel(1);
  EXPECT_EQ(records[1], 0u);
  EXPECT_TRUE(AdvanceTo(w, kT0 + absl::Milliseconds(100)).empty());
}

TEST(TimerWheel, NextDueSkipsEmptyTicksAndDueAtIsWhenADeadlineFires) {
  // The driver sleeps until NextDue(): it must never be later than a
  // deadline's tick, and with nothing armed it is the horizon.
  TimerWheel w(absl::Milliseconds(10), 64, kT0);
  EXPECT_EQ(w.NextDue(20), kT0 + absl::Milliseconds(200));
  w.Arm(1, kT0 + absl::Milliseconds(55));
  EXPECT_EQ(w.DueAt(kT0 + absl::Milliseconds(55)), kT0 + absl::Milliseconds(60));
  EXPECT_EQ(w.NextDue(20), kT0 + absl::Milliseconds(60));
  w.Arm(2, kT0 + absl::Milliseconds(31));  // an earlier one moves it forward
  EXPECT_EQ(w.NextDue(20), kT0 + absl::Milliseconds(40));
  EXPECT_EQ(AdvanceTo(w, w.NextDue(20)), std::vector<ConnId>{2});
  EXPECT_EQ(AdvanceTo(w, w.NextDue(20)), std::vector<ConnId>{1});
  EXPECT_EQ(w.NextDue(20), kT0 + absl::Milliseconds(60 + 200));
  // Beyond the horizon: looked at again at the horizon, fired on its tick.
  w.Arm(3, kT0 + absl::Milliseconds(505));
  EXPECT_EQ(w.NextDue(20), kT0 + absl::Milliseconds(60 + 200));
  EXPECT_TRUE(AdvanceTo(w, w.NextDue(20)).empty());
  EXPECT_EQ(w.NextDue(30), kT0 + absl::Milliseconds(510));
  EXPECT_EQ(AdvanceTo(w, w.NextDue(30)), std::vector<ConnId>{3});
}

}  // namespace
}  // namespace switchboard::gateway
