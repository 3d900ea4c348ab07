#include "gateway/timer_wheel.h"

#include <algorithm>

namespace switchboard::gateway {

TimerWheel::TimerWheel(absl::Duration tick, size_t slots, absl::Time now)
    : origin_(now), tick_us_(std::max<int64_t>(1, absl::ToInt64Microseconds(tick))), slots_(std::max<size_t>(1, slots)) {}

void TimerWheel::Arm(ConnId id, absl::Time when) {
  const int64_t tick = std::max(DueTick(when), done_ + 1);
  armed_[id] = tick;
  slots_[static_cast<size_t>(tick) % slots_.size()].push_back({id, tick});
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
      auto it = armed_.find(e.id);
      if (it == armed_.end() || it->second != e.tick) continue;  // re-armed or cancelled since
      if (e.tick <= target) {
        armed_.erase(it);
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
