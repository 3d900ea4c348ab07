#include "common/timer_queue.h"

namespace switchboard {

TimerQueue::TimerQueue() : thread_([this] { Run(); }) {}

TimerQueue::~TimerQueue() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    cv_.Signal();
  }
  thread_.join();
}

uint64_t TimerQueue::Schedule(absl::Time when, std::function<void()> fn) {
  absl::MutexLock lock(&mu_);
  uint64_t id = next_id_++;
  timers_.emplace(std::make_pair(when, id), std::move(fn));
  by_id_.emplace(id, when);
  last_schedule_ = absl::Now();
  // Wake the thread only if this timer is due before it would wake anyway
  // (a call per request would otherwise cost two context switches each).
  if (when < wakes_at_) cv_.Signal();
  return id;
}

bool TimerQueue::Cancel(uint64_t id) {
  absl::MutexLock lock(&mu_);
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return false;
  timers_.erase({it->second, id});
  by_id_.erase(it);
  return true;
}

void TimerQueue::Run() {
  for (;;) {
    std::function<void()> fn;
    {
      absl::MutexLock lock(&mu_);
      while (!stop_ && (timers_.empty() || timers_.begin()->first.first > absl::Now())) {
        const absl::Time now = absl::Now();
        if (timers_.empty() && now - last_schedule_ < kBusyWindow) {
          wakes_at_ = now + kBusyTick;
          cv_.WaitWithDeadline(&mu_, wakes_at_);
        } else if (timers_.empty()) {
          wakes_at_ = absl::InfiniteFuture();
          cv_.Wait(&mu_);
        } else {
          wakes_at_ = timers_.begin()->first.first;
          cv_.WaitWithDeadline(&mu_, wakes_at_);
        }
        wakes_at_ = absl::InfinitePast();
      }
      if (stop_) return;
      auto it = timers_.begin();
      fn = std::move(it->second);
      by_id_.erase(it->first.second);
      timers_.erase(it);
    }
    fn();
  }
}

}  // namespace switchboard
