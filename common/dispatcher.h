#pragma once

#include <functional>

namespace switchboard {

// The only door into a thread that owns state (the gateway's event loop).
// Post() may be called from any thread; the closure runs later on the owning
// thread. Closures must look up what they touch by ID, never keep raw
// pointers to loop-owned objects.
class Dispatcher {
 public:
  virtual ~Dispatcher() = default;
  virtual void Post(std::function<void()> fn) = 0;
};

}  // namespace switchboard
