#include "gateway/recent_ids.h"

namespace switchboard::gateway {

void RecentIds::DropOldest() {
  ids_.erase(ids_.find(*order_.front().id));
  order_.pop_front();
}

bool RecentIds::FirstTime(const std::string& id, absl::Time now, absl::Duration remember) {
  while (!order_.empty() && order_.front().until <= now) DropOldest();
  auto [it, inserted] = ids_.insert(id);
  if (!inserted) return false;
  order_.push_back({now + remember, &*it});
  while (order_.size() > max_ids_) {
    DropOldest();
    ++evicted_early_;
  }
  return true;
}

}  // namespace switchboard::gateway
