#include "control/fleet.h"

#include <algorithm>

#include "google/protobuf/util/time_util.h"
#include "spdlog/spdlog.h"

namespace switchboard::control {

using google::protobuf::util::TimeUtil;

uint64_t Fleet::Attach(const v1::GatewayHello& hello, absl::Time now, Evict evict, std::string answer_key) {
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
      KeepKey(it->first, it->second, now);
      members_.erase(it);
    }
    token = next_token_++;
    members_[hello.gateway_id()] = Member{token, hello, now, now, 0, false, {}, std::move(evict), std::move(answer_key)};
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

void Fleet::Detach(const std::string& gateway_id, uint64_t token, absl::Time now) {
  {
    absl::MutexLock lock(&mu_);
    auto it = members_.find(gateway_id);
    if (it == members_.end() || it->second.token != token) return;
    KeepKey(gateway_id, it->second, now);
    members_.erase(it);
  }
  if (on_leave_) on_leave_(gateway_id);
}

void Fleet::KeepKey(const std::string& gateway_id, Member& m, absl::Time now) {
  if (m.answer_key.empty()) return;
  auto it = past_keys_.find(gateway_id);
  if (it == past_keys_.end()) {
    if (past_keys_.size() >= kMaxPastKeyGateways) return;
    it = past_keys_.try_emplace(gateway_id).first;
  }
  auto& keys = it->second;
  keys.erase(std::remove_if(keys.begin(), keys.end(), [now](const PastKey& k) { return k.until <= now; }),
             keys.end());
  if (keys.size() >= 4) keys.erase(keys.begin());
  keys.push_back(PastKey{std::move(m.answer_key), now + kKeysKeptFor});
}

std::vector<std::string> Fleet::AnswerKeys(const std::string& gateway_id, absl::Time now) const {
  std::vector<std::string> out;
  absl::MutexLock lock(&mu_);
  auto m = members_.find(gateway_id);
  if (m != members_.end() && !m->second.answer_key.empty()) out.push_back(m->second.answer_key);
  auto p = past_keys_.find(gateway_id);
  if (p != past_keys_.end()) {
    for (auto k = p->second.rbegin(); k != p->second.rend(); ++k) {
      if (k->until > now) out.push_back(k->key);
    }
  }
  return out;
}

bool Fleet::AcceptsUnsigned(const std::string& gateway_id, absl::Time now) const {
  absl::MutexLock lock(&mu_);
  auto it = members_.find(gateway_id);
  return it != members_.end() && Fresh(it->second, now) && !it->second.hello.signs_answers();
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

bool Fleet::AllReadCommands(const std::vector<std::string>& ids, absl::Time now) const {
  if (ids.empty()) return false;
  absl::MutexLock lock(&mu_);
  for (const auto& id : ids) {
    auto it = members_.find(id);
    if (it == members_.end() || !Fresh(it->second, now) || !it->second.load.commands_on_loop()) return false;
  }
  return true;
}

size_t Fleet::Expire(absl::Time now) {
  std::vector<std::pair<std::string, Evict>> evicted;
  {
    absl::MutexLock lock(&mu_);
    for (auto it = past_keys_.begin(); it != past_keys_.end();) {
      const bool live = std::any_of(it->second.begin(), it->second.end(), [now](const PastKey& k) {
        return k.until > now;
      });
      if (live) {
        ++it;
      } else {
        past_keys_.erase(it++);
      }
    }
    for (auto it = members_.begin(); it != members_.end();) {
      if (Fresh(it->second, now)) {
        ++it;
        continue;
      }
      evicted.emplace_back(it->first, std::move(it->second.evict));
      KeepKey(it->first, it->second, now);
      members_.erase(it++);
    }
  }
  lease_expiries_.fetch_add(evicted.size(), std::memory_order_relaxed);
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
