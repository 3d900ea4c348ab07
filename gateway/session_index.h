#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include "absl/strings/string_view.h"
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/container/node_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/synchronization/mutex.h"
#include "switchboard/v1/bus.pb.h"

namespace switchboard::gateway {

using ConnId = uint64_t;

// Strings that thousands of sessions share (app IDs, client names and
// versions, transports, the gateway ID), kept once with a count of users and
// dropped with the last one (names come from clients: nothing may pile up).
// Loop thread only.
class InternPool {
 public:
  const std::string* Get(absl::string_view s);
  const std::string* Find(absl::string_view s) const;  // nullptr if not held
  void Put(const std::string* s);
  size_t size() const { return counts_.size(); }

 private:
  absl::node_hash_map<std::string, uint32_t> counts_;  // node: the key's address is stable
};

// Sessions of this node, by client ID and by (app, user). A session is kept
// compact (shared strings interned, one copy of the client ID, no protobuf);
// SessionRecords are built when asked for. One thread (the loop) changes it;
// reads may come from any thread (a bus thread answering a query without a
// trip through the loop): changes hold the lock exclusively, reads shared.
class SessionIndex {
 public:
  SessionIndex() = default;
  SessionIndex(const SessionIndex&) = delete;
  SessionIndex& operator=(const SessionIndex&) = delete;
  ~SessionIndex();

  // The index's copy of the client ID (stable until Remove), or nullptr if
  // the client ID is already present.
  const std::string* Add(const v1::SessionRecord& record, ConnId conn);
  // False if absent.
  bool Remove(const std::string& client_id);

  std::optional<v1::SessionRecord> Find(const std::string& client_id) const;
  ConnId ConnOf(const std::string& client_id) const;  // 0 if absent
  // A client's app and user, without building its record; nullopt if absent.
  struct Owner {
    std::string app_id, user_id;
  };
  std::optional<Owner> OwnerOf(const std::string& client_id) const;
  std::vector<std::string> ClientsOf(const std::string& app_id, const std::string& user_id) const;
  // Calls `visit` with the client ID of each of the user's sessions until it
  // returns false; false if it was stopped. `visit` runs under the index's
  // shared lock: it must not change the index. Any thread.
  bool VisitClientsOf(const std::string& app_id, const std::string& user_id,
                      absl::FunctionRef<bool(const std::string& client_id)> visit) const;
  // The user's sessions as records. Any thread.
  std::vector<v1::SessionRecord> SessionsOf(const std::string& app_id, const std::string& user_id) const;
  std::vector<v1::SessionRecord> All() const;
  size_t size() const {
    absl::ReaderMutexLock lock(&mu_);
    return by_client_.size();
  }
  size_t user_count() const {
    absl::ReaderMutexLock lock(&mu_);
    return by_user_.size();
  }
  size_t interned_strings() const {
    absl::ReaderMutexLock lock(&mu_);
    return pool_.size();
  }
  size_t profiles() const {
    absl::ReaderMutexLock lock(&mu_);
    return profiles_.size();
  }
  // Sessions by app, transport and protocol (the metrics' labels: app IDs
  // from the config, transports and protocols from the code). Any thread.
  struct KindCount {
    std::string app_id, transport, protocol;
    uint32_t sessions = 0;
  };
  std::vector<KindCount> CountsByKind() const;

 private:
  // What thousands of sessions have in common (client name and version,
  // transport, protocol, gateway), kept once with a count of users; its
  // strings are interned.
  struct Profile {
    const std::string* app_name;
    const std::string* app_version;
    const std::string* transport;
    const std::string* protocol;
    const std::string* gateway_id;
    bool operator==(const Profile& o) const {
      return app_name == o.app_name && app_version == o.app_version && transport == o.transport &&
             protocol == o.protocol && gateway_id == o.gateway_id;
    }
    template <typename H>
    friend H AbslHashValue(H h, const Profile& p) {
      return H::combine(std::move(h), p.app_name, p.app_version, p.transport, p.protocol, p.gateway_id);
    }
  };
  // 80 bytes: idle sessions are most of a gateway's memory.
  struct Session {
    ConnId conn = 0;
    int64_t connected_at_ms = 0;
    const std::string* app_id = nullptr;       // interned
    const Profile* profile = nullptr;          // profiles_' key
    const std::string* remote_addr = nullptr;  // interned (many sessions share an address)
    std::unique_ptr<std::string> meta_json;    // most sessions have none
    std::string user_id;
  };
  // (interned app ID, user ID): the view points into the session's own
  // user_id (node map: it stays put), or into the caller's string for a lookup.
  using UserKey = std::pair<const std::string*, absl::string_view>;
  void Fill(const std::string& client_id, const Session& s, v1::SessionRecord* out) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void Release(const Session& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Held by changes and, shared, by every read (the loop's own included: an
  // uncontended shared lock costs an atomic operation, and Clang's
  // thread-safety analysis then checks every access; tests/static).
  mutable absl::Mutex mu_;
  InternPool pool_ ABSL_GUARDED_BY(mu_);
  absl::node_hash_map<Profile, uint32_t> profiles_ ABSL_GUARDED_BY(mu_);  // node: sessions point at the keys
  // (app ID, transport, protocol), interned (held by the sessions and their
  // profiles while counted): a handful of entries.
  using Kind = std::tuple<const std::string*, const std::string*, const std::string*>;
  absl::flat_hash_map<Kind, uint32_t> kinds_ ABSL_GUARDED_BY(mu_);
  // Node map: by_user_ points at the client ID keys.
  absl::node_hash_map<std::string, Session> by_client_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<UserKey, absl::InlinedVector<const std::string*, 1>> by_user_ ABSL_GUARDED_BY(mu_);
};

}  // namespace switchboard::gateway
