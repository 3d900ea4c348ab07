#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "switchboard/v1/bus.pb.h"

namespace switchboard::gateway {

using ConnId = uint64_t;

// Sessions of this node, by client ID and by (app, user). Loop thread only.
class SessionIndex {
 public:
  // False if the client ID is already present.
  bool Add(v1::SessionRecord record, ConnId conn);
  // False if absent.
  bool Remove(const std::string& client_id);

  const v1::SessionRecord* Find(const std::string& client_id) const;
  ConnId ConnOf(const std::string& client_id) const;  // 0 if absent
  std::vector<std::string> ClientsOf(const std::string& app_id, const std::string& user_id) const;
  std::vector<v1::SessionRecord> All() const;
  size_t size() const { return by_client_.size(); }
  size_t user_count() const { return by_user_.size(); }

 private:
  struct Entry {
    v1::SessionRecord record;
    ConnId conn;
  };
  using UserKey = std::pair<std::string, std::string>;
  absl::flat_hash_map<std::string, Entry> by_client_;
  absl::flat_hash_map<UserKey, absl::flat_hash_set<std::string>> by_user_;
};

}  // namespace switchboard::gateway
