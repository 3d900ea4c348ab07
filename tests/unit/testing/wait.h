#pragma once

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace switchboard::testing {

// Polls `done` until it holds or `timeout` passes (a condition with a
// deadline, not a sleep standing in for one); returns its last value.
template <typename Pred>
bool WaitFor(Pred done, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!done() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(2));
  return done();
}

}  // namespace switchboard::testing
