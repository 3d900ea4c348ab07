#include "common/timer_queue.h"

#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace switchboard {
namespace {

// The queue wakes its thread only for a timer due before the one it already
// waits for: these check that no timer is missed or run early either way.

TEST(TimerQueue, EarlierTimerScheduledAfterALaterOneRunsFirstAndOnTime) {
  TimerQueue timers;
  absl::Mutex mu;
  std::vector<int> order;
  absl::Notification early_ran, late_ran;
  const absl::Time start = absl::Now();
  timers.Schedule(start + absl::Seconds(30), [&] {
    absl::MutexLock l(&mu);
    order.push_back(2);
    late_ran.Notify();
  });
  absl::Time ran_at;
  timers.Schedule(start + absl::Milliseconds(20), [&] {
    absl::MutexLock l(&mu);
    order.push_back(1);
    ran_at = absl::Now();
    early_ran.Notify();
  });
  // Far less than the 30 s the thread was waiting for.
  ASSERT_TRUE(early_ran.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_GE(ran_at, start + absl::Milliseconds(20));
  EXPECT_FALSE(late_ran.HasBeenNotified());
  absl::MutexLock l(&mu);
  EXPECT_EQ(order, std::vector<int>{1});
}

TEST(TimerQueue, LaterTimersScheduledWithoutAWakeUpStillRunInOrder) {
  TimerQueue timers;
  absl::Mutex mu;
  std::vector<int> order;
  absl::Notification all;
  const absl::Time start = absl::Now();
  for (int i = 0; i < 5; ++i) {
    timers.Schedule(start + absl::Milliseconds(10 * (i + 1)), [&, i] {
      absl::MutexLock l(&mu);
      order.push_back(i);
      if (order.size() == 5) all.Notify();
    });
  }
  ASSERT_TRUE(all.WaitForNotificationWithTimeout(absl::Seconds(10)));
  absl::MutexLock l(&mu);
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4}));
}

TEST(TimerQueue, TimerAfterACancelledEarlierOneStillRuns) {
  // The thread waits for the first timer; it is cancelled and a later one
  // scheduled without waking the thread: that one must still run.
  TimerQueue timers;
  absl::Notification ran, cancelled_ran;
  const absl::Time start = absl::Now();
  const uint64_t first = timers.Schedule(start + absl::Milliseconds(30), [&] { cancelled_ran.Notify(); });
  timers.Schedule(start + absl::Milliseconds(60), [&] { ran.Notify(); });
  EXPECT_TRUE(timers.Cancel(first));
  ASSERT_TRUE(ran.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_FALSE(cancelled_ran.HasBeenNotified());
  EXPECT_FALSE(timers.Cancel(first));
}

TEST(TimerQueue, WhileBusyTimersOfEveryLengthRunOnTime) {
  // A queue that just had timers and has none now looks again every 100 ms
  // on its own and is not woken for a timer due after that; a timer due
  // sooner still wakes it. Both must run on time, none early.
  TimerQueue timers;
  const uint64_t warm = timers.Schedule(absl::Now() + absl::Seconds(30), [] {});
  EXPECT_TRUE(timers.Cancel(warm));
  for (absl::Duration after : {absl::Milliseconds(350), absl::Milliseconds(15), absl::Milliseconds(120)}) {
    absl::Notification ran;
    absl::Time ran_at;
    const absl::Time due = absl::Now() + after;
    timers.Schedule(due, [&] {
      ran_at = absl::Now();
      ran.Notify();
    });
    ASSERT_TRUE(ran.WaitForNotificationWithTimeout(absl::Seconds(10))) << after;
    EXPECT_GE(ran_at, due) << after;
  }
}

}  // namespace
}  // namespace switchboard
