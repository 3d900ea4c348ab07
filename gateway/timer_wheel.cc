#include "gateway/timer_wheel.h"

#include <algorithm>

namespace switchboard::gateway {

TimerWheel::TimerWheel(absl::Duration tick, size_t slots, absl::Time now, StampOf stamp_of)
    : origin_(now),
      tick_us_(std::max<int64_t>(1, absl::ToInt64Microseconds(tick))),
      slots_(std::max<size_t>(1, slots)),
      stamp_of_(std::move(stamp_of)) {}

uint32_t* TimerWheel::StampFor(ConnId id, bool create) {
  if (stamp_of_) return stamp_of_(id);
  if (create) return &own_stamps_[id];
  auto it = own_stamps_.find(id);
  return it == own_stamps_.end() ? nullptr : &it->second;
}

void TimerWheel::Arm(ConnId id, absl::Time when) {
  uint32_t* stamp = StampFor(id, true);
  if (stamp == nullptr) return;  // no such connection
  const int64_t tick = std::max(DueTick(when), done_ + 1);
  if (*stamp == 0) ++armed_;
  *stamp = Stamp(tick);
  slots_[static_cast<size_t>(tick) % slots_.size()].push_back({id, tick});
}

void TimerWheel::Cancel(ConnId id) {
  uint32_t* stamp = StampFor(id, false);
  if (stamp == nullptr || *stamp == 0) return;
  *stamp = 0;
  --armed_;
  if (!stamp_of_) own_stamps_.erase(id);
}

void TimerWheel::Advance(absl::Time now, const std::function<void(ConnId)>& fire) {
  const int64_t target = TickOf(now);
  if (target <= done_) return;
  // Behind by more than a revolution: every slot once is enough (entries
  // carry their own tick).
  const int64_t first = std::max(done_ + 1, target - static_cast<int64_t>(slots_.size()) + 1);
  std::vector<ConnId> due;
  for (int64_t t = first; t <= target; ++t) {
    auto& slot = slots_[static_cast<size_t>(t) % slots_.size()];
    if (slot.empty()) continue;
    // Compacted in place: entries for a later revolution stay, the rest go.
    size_t kept = 0;
    for (const Entry& e : slot) {
      uint32_t* stamp = StampFor(e.id, false);
      if (stamp == nullptr || *stamp != Stamp(e.tick)) continue;  // re-armed, cancelled or gone since
      if (e.tick <= target) {
        *stamp = 0;
        --armed_;
        if (!stamp_of_) own_stamps_.erase(e.id);
        due.push_back(e.id);
      } else {
        slot[kept++] = e;
      }
    }
    slot.resize(kept);
  }
  done_ = target;
  for (ConnId id : due) fire(id);
}

}  // namespace switchboard::gateway
