#include "control/fleet.h"

#include <algorithm>

#include "google/protobuf/util/time_util.h"
#include "spdlog/spdlog.h"

namespace switchboard::control {

using google::protobuf::util::TimeUtil;

uint64_t Fleet::Attach(const v1::GatewayHello& hello, absl::Time now, Evict evict) {
  Evict stale_evict;
  uint64_t token = 0;
  {
    absl::MutexLock lock(&mu_);
    if (closed_) return 0;
    auto it = members_.find(hello.gateway_id());
    if (it != members_.end()) {
      if (Fresh(it->second, now)) return 0;
      // The old attachment went silent: this one takes over, the old stream ends.
      stale_evict = std::move(it->second.evict);
      members_.erase(it);
    }
    token = next_token_++;
    members_[hello.gateway_id()] = Member{token, hello, now, now, 0, false, {}, std::move(evict)};
  }
  if (stale_evict) stale_evict(kLeaseExpired);
  return token;
}

void Fleet::Close() {
  std::vector<Evict> ends;
  {
    absl::MutexLock lock(&mu_);
    closed_ = true;
    for (auto& [id, m] : members_) {
      if (m.evict) ends.push_back(std::move(m.evict));
      m.evict = nullptr;
    }
  }
  for (auto& end : ends) end(kStopping);
}

bool Fleet::closed() const {
  absl::MutexLock lock(&mu_);
  return closed_;
}

void Fleet::Detach(const std::string& gateway_id, uint64_t token) {
  {
    absl::MutexLock lock(&mu_);
    auto it = members_.find(gateway_id);
    if (it == members_.end() || it->second.token != token) return;
    members_.erase(it);
  }
  if (on_leave_) on_leave_(gateway_id);
}

void Fleet::RenewAll(absl::Time now) {
  absl::MutexLock lock(&mu_);
  for (auto& [id, m] : members_) m.last_seen = std::max(m.last_seen, now);
}

void Fleet::Renew(const std::string& gateway_id, uint64_t token, absl::Time now) {
  absl::MutexLock lock(&mu_);
  auto it = members_.find(gateway_id);
  if (it != members_.end() && it->second.token == token) it->second.last_seen = std::max(it->second.last_seen, now);
}

void Fleet::ApplySnapshot(const std::string& gateway_id, uint64_t token, const v1::SessionSnapshot& s) {
  absl::MutexLock lock(&mu_);
  auto it = members_.find(gateway_id);
  if (it == members_.end() || it->second.token != token) return;
  Member& m = it->second;
  if (!m.snapshot_open) m.sessions = 0;
  m.sessions += s.sessions_size();
  m.snapshot_open = s.more();
}

void Fleet::ApplyDelta(const std::string& gateway_id, uint64_t token, const v1::SessionDelta& d) {
  absl::MutexLock lock(&mu_);
  auto it = members_.find(gateway_id);
  if (it == members_.end() || it->second.token != token) return;
  it->second.sessions = std::max<int64_t>(0, it->second.sessions + d.opened_size() - d.closed_client_ids_size());
}

void Fleet::ApplyLoad(const std::string& gateway_id, uint64_t token, const v1::GatewayLoad& load) {
  absl::MutexLock lock(&mu_);
  auto it = members_.find(gateway_id);
  if (it != members_.end() && it->second.token == token) it->second.load = load;
}

size_t Fleet::Expire(absl::Time now) {
  std::vector<std::pair<std::string, Evict>> evicted;
  {
    absl::MutexLock lock(&mu_);
    for (auto it = members_.begin(); it != members_.end();) {
      if (Fresh(it->second, now)) {
        ++it;
        continue;
      }
      evicted.emplace_back(it->first, std::move(it->second.evict));
      members_.erase(it++);
    }
  }
  for (auto& [id, evict] : evicted) {
    spdlog::warn("gateway {} evicted: no heartbeat for {}", id, absl::FormatDuration(lease_));
    if (evict) evict(kLeaseExpired);
    if (on_leave_) on_leave_(id);
  }
  return evicted.size();
}

bool Fleet::IsLive(const std::string& gateway_id, absl::Time now) const {
  absl::MutexLock lock(&mu_);
  auto it = members_.find(gateway_id);
  return it != members_.end() && Fresh(it->second, now);
}

std::vector<std::string> Fleet::LiveIds(absl::Time now) const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> out;
  out.reserve(members_.size());
  for (const auto& [id, m] : members_) {
    if (Fresh(m, now)) out.push_back(id);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<v1::GatewayInfo> Fleet::List(absl::Time now) const {
  absl::MutexLock lock(&mu_);
  std::vector<v1::GatewayInfo> out;
  for (const auto& [id, m] : members_) {
    if (!Fresh(m, now)) continue;
    v1::GatewayInfo info;
    info.set_id(id);
    info.set_version(m.hello.version());
    info.set_sessions(static_cast<uint32_t>(m.sessions));
    info.set_address(m.hello.address());
    info.set_connections(m.load.connections());
    info.set_draining(m.load.draining());
    *info.mutable_attached_since() = TimeUtil::MillisecondsToTimestamp(absl::ToUnixMillis(m.attached_at));
    *info.mutable_started_at() = TimeUtil::MillisecondsToTimestamp(m.hello.start_time_ms());
    out.push_back(std::move(info));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.id() < b.id(); });
  return out;
}

}  // namespace switchboard::control
