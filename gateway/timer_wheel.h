#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "gateway/transport.h"

namespace switchboard::gateway {

// Every connection's next deadline on one structure, O(1) to arm, re-arm and
// cancel: a hashed wheel of `slots` slots of `tick` each, driven by a single
// timer (WsServer's). lws keeps its timers in one sorted list, O(N) per
// insert, which at 15k connections ate most of a gateway's CPU. A deadline
// beyond one revolution waits in its slot and is checked again each pass;
// re-arming or cancelling is lazy (only the latest deadline of a connection
// counts, older entries are dropped when their slot comes up). Deadlines
// fire at most one tick late, never early. Loop thread only.
//
// Which deadline is a connection's latest is kept in a 4-byte stamp per
// connection: in the caller's own per-connection record when it passes
// `stamp_of` (returns the connection's stamp, nullptr once it is gone),
// otherwise in a map of the wheel's.
class TimerWheel {
 public:
  using StampOf = std::function<uint32_t*(ConnId)>;
  TimerWheel(absl::Duration tick, size_t slots, absl::Time now, StampOf stamp_of = nullptr);

  void Arm(ConnId id, absl::Time when);
  void Cancel(ConnId id);
  // Calls `fire(id)` for every connection whose deadline is at or before
  // `now` (it may re-arm from inside), at most `max_fire` of them: true if
  // it stopped there and more are due (call again soon; the loop can serve
  // other work in between).
  bool Advance(absl::Time now, const std::function<void(ConnId)>& fire, size_t max_fire = SIZE_MAX);
  // Counts right as long as a connection is cancelled before its record goes.
  size_t armed() const { return armed_; }
  // When Advance() should be called next: the start of the first tick after
  // the processed ones whose slot holds an entry (it may hold only stale or
  // later-revolution ones: an early look is harmless), or after `horizon`
  // ticks if none does. Lets the driver sleep through empty ticks.
  absl::Time NextDue(int64_t horizon) const;
  // When Advance() must run for a deadline armed at `when` to fire.
  absl::Time DueAt(absl::Time when) const {
    return origin_ + absl::Microseconds(std::max(DueTick(when), done_ + 1) * tick_us_);
  }

 private:
  // A tick as a stamp: never 0 (0 = not armed).
  static uint32_t Stamp(int64_t tick) { return static_cast<uint32_t>(tick % 0xFFFFFFFFLL) + 1; }
  uint32_t* StampFor(ConnId id, bool create);
  struct Entry {
    ConnId id;
    int64_t tick;
  };
  // The last tick that has started by `t` (a deadline fires once its tick is processed).
  int64_t TickOf(absl::Time t) const { return absl::ToInt64Microseconds(t - origin_) / tick_us_; }
  // The tick by whose processing `t` has passed.
  int64_t DueTick(absl::Time t) const {
    const int64_t us = absl::ToInt64Microseconds(t - origin_);
    return (us + tick_us_ - 1) / tick_us_;
  }

  const absl::Time origin_;
  const int64_t tick_us_;
  std::vector<std::vector<Entry>> slots_;
  StampOf stamp_of_;
  absl::flat_hash_map<ConnId, uint32_t> own_stamps_;  // without stamp_of: id -> stamp
  size_t armed_ = 0;
  int64_t done_ = 0;                            // every tick up to this one has been processed
};

}  // namespace switchboard::gateway
