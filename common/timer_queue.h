#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <thread>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace switchboard {

// Runs closures at a deadline on its own thread. Schedule/Cancel may be called
// from any thread; callbacks run without the lock held and must be quick.
class TimerQueue {
 public:
  TimerQueue();
  ~TimerQueue();
  TimerQueue(const TimerQueue&) = delete;
  TimerQueue& operator=(const TimerQueue&) = delete;

  uint64_t Schedule(absl::Time when, std::function<void()> fn);
  // True if the timer was still pending (and now never runs).
  bool Cancel(uint64_t id);

 private:
  void Run();

  absl::Mutex mu_;
  absl::CondVar cv_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  // When the thread wakes next on its own (InfiniteFuture while it waits
  // for a first timer, InfinitePast while it is awake). A timer at or after
  // it needs no wake-up: the thread looks again then.
  absl::Time wakes_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // While timers come often (one per fleet call in control), the thread
  // looks again every kBusyTick even with nothing due, so that a new timer
  // due later than that never costs a wake-up (two context switches per
  // call otherwise); after kBusyWindow without one it sleeps until told.
  static constexpr absl::Duration kBusyTick = absl::Milliseconds(100);
  static constexpr absl::Duration kBusyWindow = absl::Seconds(2);
  absl::Time last_schedule_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  // (deadline, id) -> callback
  std::map<std::pair<absl::Time, uint64_t>, std::function<void()>> timers_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, absl::Time> by_id_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace switchboard
