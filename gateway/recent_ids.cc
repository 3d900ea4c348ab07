#include "gateway/recent_ids.h"

namespace switchboard::gateway {

bool RecentIds::FirstTime(const std::string& id, absl::Time now, absl::Duration remember) {
  while (!order_.empty() && order_.front().until <= now) {
    ids_.erase(order_.front().id);
    order_.pop_front();
  }
  if (!ids_.insert(id).second) return false;
  order_.push_back({now + remember, id});
  while (order_.size() > max_ids_) {
    ids_.erase(order_.front().id);
    order_.pop_front();
    ++evicted_early_;
  }
  return true;
}

}  // namespace switchboard::gateway
