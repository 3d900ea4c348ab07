#include "control/presence_table.h"

#include <algorithm>

namespace switchboard::control {

bool PresenceTable::Seen(const std::string& gateway_id, absl::Time now, uint64_t bus_session) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(gateway_id);
  if (it != entries_.end()) {
    it->second.last_heard = std::max(it->second.last_heard, now);
    it->second.expired = false;
    const bool back = it->second.bus_session != bus_session;
    it->second.bus_session = bus_session;
    return back;
  }
  if (entries_.size() < kMaxEntries) entries_.emplace(gateway_id, Entry{now, false, bus_session});
  return true;
}

void PresenceTable::Left(const std::string& gateway_id) {
  absl::MutexLock lock(&mu_);
  entries_.erase(gateway_id);
}

void PresenceTable::RenewAll(absl::Time now) {
  absl::MutexLock lock(&mu_);
  for (auto& [id, e] : entries_) {
    if (!e.expired) e.last_heard = std::max(e.last_heard, now);
  }
}

bool PresenceTable::Present(const std::string& gateway_id, absl::Time now) const {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(gateway_id);
  return it != entries_.end() && now - it->second.last_heard < lease_;
}

std::vector<std::string> PresenceTable::PresentIds(absl::Time now) const {
  std::vector<std::string> out;
  absl::MutexLock lock(&mu_);
  for (const auto& [id, e] : entries_) {
    if (now - e.last_heard < lease_) out.push_back(id);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> PresenceTable::Expire(absl::Time now) {
  std::vector<std::string> out;
  absl::MutexLock lock(&mu_);
  for (auto it = entries_.begin(); it != entries_.end();) {
    Entry& e = it->second;
    if (now - e.last_heard >= 10 * lease_) {
      if (!e.expired) out.push_back(it->first);
      entries_.erase(it++);
      continue;
    }
    if (now - e.last_heard >= lease_ && !e.expired) {
      e.expired = true;
      out.push_back(it->first);
    }
    ++it;
  }
  return out;
}

}  // namespace switchboard::control
