#pragma once

#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace switchboard::control {

// Whether this replica may claim to know the whole fleet, as far as its own
// running goes: not during its first lease, and not when it did not run for
// a while (SIGSTOP, a paused VM, a starved host) or its wall clock jumped.
// Leases are kept in wall time and heartbeats pile up unread while the
// process does not run, so after such a gap every member looks silent: the
// replica then counts as just started (for one lease from the moment it
// noticed) instead of answering from a fleet it has wrongly emptied.
//
// Times are passed in (wall for leases, monotonic for how long the process
// ran) so the rules are testable. Thread-safe: Tick from the sweeper,
// NotReady from any thread.
class StallGuard {
 public:
  // `max_gap`: the longest the sweeper may go without a tick before the
  // replica counts as stalled (a member's heartbeat is at most one interval
  // old when a gap starts, so gaps up to lease - heartbeat evict nobody).
  StallGuard(absl::Duration lease, absl::Duration max_gap, absl::Time wall, absl::Duration mono);

  // The sweeper's tick. True when it finds a gap or a jump since the last
  // one: the caller renews every member's lease before expiring any.
  bool Tick(absl::Time wall, absl::Duration mono);

  // "" when this replica may answer complete; otherwise why not.
  std::string NotReady(absl::Time wall, absl::Duration mono) const;

 private:
  // Why a gap between the last tick and (wall, mono) means a stall, or "".
  std::string Gap(absl::Time wall, absl::Duration mono) const ABSL_SHARED_LOCKS_REQUIRED(mu_);

  const absl::Duration lease_;
  const absl::Duration max_gap_;
  mutable absl::Mutex mu_;
  absl::Time last_wall_ ABSL_GUARDED_BY(mu_);
  absl::Duration last_mono_ ABSL_GUARDED_BY(mu_);
  absl::Duration fresh_since_ ABSL_GUARDED_BY(mu_);  // monotonic: started, or resumed
  std::string fresh_why_ ABSL_GUARDED_BY(mu_);       // "started" or what was noticed
};

// The monotonic clock StallGuard wants (CLOCK_MONOTONIC: runs while the
// process is stopped, never jumps).
absl::Duration MonotonicNow();

}  // namespace switchboard::control
