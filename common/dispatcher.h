#pragma once

#include <functional>

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

}  // namespace switchboard
