#include "gateway/session_index.h"

#include <algorithm>

namespace switchboard::gateway {

const std::string* InternPool::Get(absl::string_view s) {
  auto [it, inserted] = counts_.try_emplace(std::string(s), 0);
  ++it->second;
  return &it->first;
}

const std::string* InternPool::Find(absl::string_view s) const {
  auto it = counts_.find(s);
  return it == counts_.end() ? nullptr : &it->first;
}

void InternPool::Put(const std::string* s) {
  if (s == nullptr) return;
  auto it = counts_.find(*s);
  if (it != counts_.end() && --it->second == 0) counts_.erase(it);
}

SessionIndex::~SessionIndex() {
  static_assert(sizeof(std::string) != 32 || sizeof(Session) <= 80, "one Session per session: keep it small");
  absl::MutexLock lock(&mu_);
  for (const auto& [id, s] : by_client_) Release(s);
}

const std::string* SessionIndex::Add(const v1::SessionRecord& record, ConnId conn) {
  absl::MutexLock lock(&mu_);
  auto [it, inserted] = by_client_.try_emplace(record.client_id());
  if (!inserted) return nullptr;
  Session& s = it->second;
  s.conn = conn;
  s.connected_at_ms = record.connected_at_ms();
  s.app_id = pool_.Get(record.app_id());
  s.remote_addr = pool_.Get(record.remote_addr());
  const Profile profile{pool_.Get(record.app_name()), pool_.Get(record.app_version()), pool_.Get(record.transport()),
                        pool_.Get(record.protocol()), pool_.Get(record.gateway_id())};
  auto [pit, new_profile] = profiles_.try_emplace(profile, 0);
  if (!new_profile) {
    // The profile holds its strings once; this session's extra holds go.
    for (const std::string* p : {profile.app_name, profile.app_version, profile.transport, profile.protocol,
                                 profile.gateway_id}) {
      pool_.Put(p);
    }
  }
  ++pit->second;
  s.profile = &pit->first;
  ++kinds_[Kind{s.app_id, s.profile->transport, s.profile->protocol}];
  s.user_id = record.user_id();
  if (!record.meta_json().empty()) s.meta_json = std::make_unique<std::string>(record.meta_json());
  s.user_id.shrink_to_fit();
  by_user_[UserKey{s.app_id, s.user_id}].push_back(&it->first);
  return &it->first;
}

void SessionIndex::Release(const Session& s) {
  if (auto kit = kinds_.find(Kind{s.app_id, s.profile->transport, s.profile->protocol});
      kit != kinds_.end() && --kit->second == 0) {
    kinds_.erase(kit);
  }
  pool_.Put(s.app_id);
  pool_.Put(s.remote_addr);
  auto it = profiles_.find(*s.profile);
  if (it != profiles_.end() && --it->second == 0) {
    const Profile p = it->first;
    profiles_.erase(it);
    for (const std::string* str : {p.app_name, p.app_version, p.transport, p.protocol, p.gateway_id}) pool_.Put(str);
  }
}

std::vector<SessionIndex::KindCount> SessionIndex::CountsByKind() const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<KindCount> out;
  out.reserve(kinds_.size());
  for (const auto& [kind, n] : kinds_) {
    out.push_back(KindCount{*std::get<0>(kind), *std::get<1>(kind), *std::get<2>(kind), n});
  }
  return out;
}

bool SessionIndex::Remove(const std::string& client_id) {
  absl::MutexLock lock(&mu_);
  auto it = by_client_.find(client_id);
  if (it == by_client_.end()) return false;
  const Session& s = it->second;
  auto uit = by_user_.find(UserKey{s.app_id, s.user_id});
  if (uit != by_user_.end()) {
    auto& clients = uit->second;
    auto pos = std::find(clients.begin(), clients.end(), &it->first);
    if (pos != clients.end()) {
      *pos = clients.back();
      clients.pop_back();
    }
    if (clients.empty()) {
      by_user_.erase(uit);
    } else if (uit->first.second.data() == s.user_id.data()) {
      // The key's view points into this session, which is going: key the
      // user's entry by one of the sessions that stay.
      auto rest = std::move(uit->second);
      by_user_.erase(uit);
      const Session& other = by_client_.find(*rest.front())->second;
      by_user_.emplace(UserKey{other.app_id, other.user_id}, std::move(rest));
    }
  }
  Release(s);
  by_client_.erase(it);
  return true;
}

void SessionIndex::Fill(const std::string& client_id, const Session& s, v1::SessionRecord* out) const {
  out->set_client_id(client_id);
  out->set_app_id(*s.app_id);
  out->set_user_id(s.user_id);
  out->set_app_name(*s.profile->app_name);
  out->set_app_version(*s.profile->app_version);
  out->set_transport(*s.profile->transport);
  out->set_protocol(*s.profile->protocol);
  if (s.meta_json) out->set_meta_json(*s.meta_json);
  out->set_connected_at_ms(s.connected_at_ms);
  out->set_remote_addr(*s.remote_addr);
  out->set_gateway_id(*s.profile->gateway_id);
}

std::optional<v1::SessionRecord> SessionIndex::Find(const std::string& client_id) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = by_client_.find(client_id);
  if (it == by_client_.end()) return std::nullopt;
  v1::SessionRecord record;
  Fill(it->first, it->second, &record);
  return record;
}

ConnId SessionIndex::ConnOf(const std::string& client_id) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = by_client_.find(client_id);
  return it == by_client_.end() ? 0 : it->second.conn;
}

std::optional<SessionIndex::Owner> SessionIndex::OwnerOf(const std::string& client_id) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = by_client_.find(client_id);
  if (it == by_client_.end()) return std::nullopt;
  return Owner{*it->second.app_id, it->second.user_id};
}

std::vector<std::string> SessionIndex::ClientsOf(const std::string& app_id, const std::string& user_id) const {
  std::vector<std::string> out;
  VisitClientsOf(app_id, user_id, [&out](const std::string& id) {
    out.push_back(id);
    return true;
  });
  return out;
}

bool SessionIndex::VisitClientsOf(const std::string& app_id, const std::string& user_id,
                                  absl::FunctionRef<bool(const std::string& client_id)> visit) const {
  absl::ReaderMutexLock lock(&mu_);
  // Only an app ID in the pool can have sessions; looking does not add it.
  const std::string* app = pool_.Find(app_id);
  if (app == nullptr) return true;
  auto it = by_user_.find(UserKey{app, user_id});
  if (it == by_user_.end()) return true;
  for (const std::string* id : it->second) {
    if (!visit(*id)) return false;
  }
  return true;
}

std::vector<v1::SessionRecord> SessionIndex::SessionsOf(const std::string& app_id,
                                                        const std::string& user_id) const {
  std::vector<v1::SessionRecord> out;
  absl::ReaderMutexLock lock(&mu_);
  const std::string* app = pool_.Find(app_id);
  if (app == nullptr) return out;
  auto it = by_user_.find(UserKey{app, user_id});
  if (it == by_user_.end()) return out;
  out.reserve(it->second.size());
  for (const std::string* id : it->second) {
    auto sit = by_client_.find(*id);
    if (sit != by_client_.end()) Fill(sit->first, sit->second, &out.emplace_back());
  }
  return out;
}

std::vector<v1::SessionRecord> SessionIndex::All() const {
  std::vector<v1::SessionRecord> out;
  absl::ReaderMutexLock lock(&mu_);
  out.reserve(by_client_.size());
  for (const auto& [id, s] : by_client_) Fill(id, s, &out.emplace_back());
  return out;
}

}  // namespace switchboard::gateway
