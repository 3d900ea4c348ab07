#pragma once

#include <functional>
#include <memory>
#include <utility>

#include "absl/synchronization/mutex.h"
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
  // Calls `on_ready` on the owning thread each time descriptor `fd` is
  // readable, from a coming loop turn until the loop ends (the descriptor
  // must outlive the loop). False where the loop cannot watch one, and then
  // nothing is called. Any thread.
  virtual bool Watch(int fd, std::function<void()> on_ready) {
    (void)fd;
    (void)on_ready;
    return false;
  }
};

// Runs `fn` on the loop and waits up to `timeout` for its result. False if
// the loop refused or dropped the closure or did not get to it in time (then
// `out` is untouched). Once it returns, `fn` has either run to the end or
// never will: a closure the caller gave up on (a stalled loop) is left in
// the queue disarmed, so what `fn` captured (often the caller's `this`) may
// be gone by the time the loop reaches it. Never call it on the loop thread.
template <typename T, typename Fn>
bool RunOnLoop(Dispatcher* loop, Fn fn, absl::Duration timeout, T* out) {
  struct Answer {
    absl::Mutex mu;
    bool abandoned ABSL_GUARDED_BY(mu) = false;
    bool done ABSL_GUARDED_BY(mu) = false;
    T value ABSL_GUARDED_BY(mu){};
  };
  auto answer = std::make_shared<Answer>();
  if (!loop->Post([answer, fn = std::move(fn)]() mutable {
        // Held while `fn` runs: the caller cannot give up half way.
        absl::MutexLock lock(&answer->mu);
        if (answer->abandoned) return;
        answer->value = fn();
        answer->done = true;
      })) {
    return false;
  }
  absl::MutexLock lock(&answer->mu);
  if (!answer->mu.AwaitWithTimeout(absl::Condition(&answer->done), timeout)) {
    answer->abandoned = true;
    return false;
  }
  *out = std::move(answer->value);
  return true;
}

}  // namespace switchboard
