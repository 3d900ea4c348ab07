#pragma once

#include <functional>
#include <memory>
#include <utility>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace switchboard {

// The only door into a thread that owns state (the gateway's event loop).
// Post() may be called from any thread; the closure runs later on the owning
// thread. Closures must look up what they touch by ID, never keep raw
// pointers to loop-owned objects. The queue is bounded: Post() returns false
// (and the closure is destroyed unrun) when it is full or the loop has ended,
// and a closure may also be destroyed unrun at shutdown, so a caller waiting
// for one must wait with a deadline, never on a promise that could break.
class Dispatcher {
 public:
  virtual ~Dispatcher() = default;
  virtual bool Post(std::function<void()> fn) = 0;
};

// Runs `fn` on the loop and waits up to `timeout` for its result. False if
// the loop refused or dropped the closure or did not get to it in time (then
// `out` is untouched). Never call it on the loop thread.
template <typename T, typename Fn>
bool RunOnLoop(Dispatcher* loop, Fn fn, absl::Duration timeout, T* out) {
  struct Answer {
    absl::Notification ready;
    T value{};
  };
  auto answer = std::make_shared<Answer>();
  if (!loop->Post([answer, fn = std::move(fn)]() mutable {
        answer->value = fn();
        answer->ready.Notify();
      })) {
    return false;
  }
  if (!answer->ready.WaitForNotificationWithTimeout(timeout)) return false;
  *out = std::move(answer->value);
  return true;
}

}  // namespace switchboard
