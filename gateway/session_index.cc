#include "gateway/session_index.h"

namespace switchboard::gateway {

bool SessionIndex::Add(v1::SessionRecord record, ConnId conn) {
  std::string client_id = record.client_id();
  UserKey key{record.app_id(), record.user_id()};
  auto [it, inserted] = by_client_.try_emplace(client_id, Entry{std::move(record), conn});
  if (!inserted) return false;
  by_user_[key].insert(client_id);
  return true;
}

bool SessionIndex::Remove(const std::string& client_id) {
  auto it = by_client_.find(client_id);
  if (it == by_client_.end()) return false;
  UserKey key{it->second.record.app_id(), it->second.record.user_id()};
  auto uit = by_user_.find(key);
  if (uit != by_user_.end()) {
    uit->second.erase(client_id);
    if (uit->second.empty()) by_user_.erase(uit);
  }
  by_client_.erase(it);
  return true;
}

const v1::SessionRecord* SessionIndex::Find(const std::string& client_id) const {
  auto it = by_client_.find(client_id);
  return it == by_client_.end() ? nullptr : &it->second.record;
}

ConnId SessionIndex::ConnOf(const std::string& client_id) const {
  auto it = by_client_.find(client_id);
  return it == by_client_.end() ? 0 : it->second.conn;
}

std::vector<std::string> SessionIndex::ClientsOf(const std::string& app_id,
                                                 const std::string& user_id) const {
  auto it = by_user_.find(UserKey{app_id, user_id});
  if (it == by_user_.end()) return {};
  return {it->second.begin(), it->second.end()};
}

std::vector<v1::SessionRecord> SessionIndex::All() const {
  std::vector<v1::SessionRecord> out;
  out.reserve(by_client_.size());
  for (const auto& [id, entry] : by_client_) out.push_back(entry.record);
  return out;
}

}  // namespace switchboard::gateway
