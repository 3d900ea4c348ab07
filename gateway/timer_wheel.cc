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

absl::Time TimerWheel::NextDue(int64_t horizon) const {
  const int64_t last = done_ + std::max<int64_t>(1, std::min<int64_t>(horizon, static_cast<int64_t>(slots_.size())));
  int64_t t = done_ + 1;
  while (t < last && slots_[static_cast<size_t>(t) % slots_.size()].empty()) ++t;
  return origin_ + absl::Microseconds(t * tick_us_);
}

bool TimerWheel::Advance(absl::Time now, const std::function<void(ConnId)>& fire, size_t max_fire) {
  const int64_t target = TickOf(now);
  if (target <= done_) return false;
  // Behind by more than a revolution: every slot once is enough (entries
  // carry their own tick).
  const int64_t first = std::max(done_ + 1, target - static_cast<int64_t>(slots_.size()) + 1);
  std::vector<ConnId> due;
  bool more = false;
  int64_t t = first;
  for (; t <= target && !more; ++t) {
    auto& slot = slots_[static_cast<size_t>(t) % slots_.size()];
    if (slot.empty()) continue;
    // Compacted in place: entries for a later revolution stay, the rest go.
    size_t kept = 0;
    size_t i = 0;
    for (; i < slot.size(); ++i) {
      const Entry e = slot[i];
      uint32_t* stamp = StampFor(e.id, false);
      if (stamp == nullptr || *stamp != Stamp(e.tick)) continue;  // re-armed, cancelled or gone since
      if (e.tick <= target) {
        if (due.size() >= max_fire) {
          more = true;  // this slot is not done: the rest waits for the next call
          break;
        }
        *stamp = 0;
        --armed_;
        if (!stamp_of_) own_stamps_.erase(e.id);
        due.push_back(e.id);
      } else {
        slot[kept++] = e;
      }
    }
    for (; i < slot.size(); ++i) slot[kept++] = slot[i];
    slot.resize(kept);
    // Give a big slot's memory back once it is empty: pings come in batches
    // (250 ms slots), so some wheel slots fill with hundreds of entries and
    // would otherwise keep that capacity forever (measured: ~55 B per idle
    // session after the first ping round). Small ones keep theirs.
    if (kept == 0 && slot.capacity() > 16) std::vector<Entry>().swap(slot);
  }
  // Every tick before the one it stopped in is done (all of them if none).
  done_ = more ? t - 2 : target;
  for (ConnId id : due) fire(id);
  return more;
}

}  // namespace switchboard::gateway
