#pragma once

#include <atomic>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "switchboard/v1/control.pb.h"
#include "switchboard/v1/registry.pb.h"

namespace switchboard::control {

// Gateways attached to this control replica. A gateway is a member while its
// authenticated Attach stream is open and its lease is fresh: every message
// on the stream renews it; a gateway silent for a whole lease is evicted (its
// stream is ended, so it re-attaches with a fresh snapshot). Thread-safe
// (gRPC reactions, API calls, the sweeper).
class Fleet {
 public:
  explicit Fleet(absl::Duration lease) : lease_(lease) {}

  // Returns a token naming this attachment, or 0 when a member with this ID
  // still holds a fresh lease: a second Attach never displaces a live member.
  // Ends a member's stream, saying why; called (without the fleet's lock) if
  // the lease runs out or the fleet closes.
  using Evict = std::function<void(const char* why)>;
  static constexpr const char* kLeaseExpired = "lease expired";
  static constexpr const char* kStopping = "this control replica is stopping";
  // Once closed, Attach returns 0. `answer_key`: this attachment's key for
  // the gateway's bus answers (kept for a while after it leaves, so that a
  // gateway cut from this replica but still on the bus is believed).
  uint64_t Attach(const v1::GatewayHello& hello, absl::Time now, Evict evict, std::string answer_key = "");
  // This control replica is stopping: every member's stream is asked to end
  // now (each `evict`, once), so that the gateways move on at once instead of
  // at the server's shutdown deadline, and no gateway attaches any more.
  void Close();
  bool closed() const;
  void Detach(const std::string& gateway_id, uint64_t token, absl::Time now = absl::Now());
  // Any message on the stream renews the lease.
  void Renew(const std::string& gateway_id, uint64_t token, absl::Time now);
  // One chunk of a snapshot; the first after attach (or after a last chunk)
  // starts the count afresh.
  void ApplySnapshot(const std::string& gateway_id, uint64_t token, const v1::SessionSnapshot& s);
  void ApplyDelta(const std::string& gateway_id, uint64_t token, const v1::SessionDelta& d);
  void ApplyLoad(const std::string& gateway_id, uint64_t token, const v1::GatewayLoad& load);
  // Evicts every member whose lease ran out by `now`; returns how many.
  size_t Expire(absl::Time now);
  // Members evicted for a lease that ran out, since start.
  uint64_t lease_expiries() const { return lease_expiries_.load(std::memory_order_relaxed); }
  // Every member's lease starts afresh at `now`: after this replica did not
  // run for a while, silence says nothing about the gateways.
  void RenewAll(absl::Time now);
  // Before any gateway attaches: called (without the fleet's lock, on the
  // thread that saw it) with the ID of each member that leaves the fleet
  // (its stream ended or its lease ran out).
  using LeaveFn = std::function<void(const std::string& gateway_id)>;
  void set_on_leave(LeaveFn on_leave) { on_leave_ = std::move(on_leave); }

  bool IsLive(const std::string& gateway_id, absl::Time now) const;
  // The keys an answer from this gateway may carry: its attachment's, and
  // those of its attachments that ended within kKeysKeptFor.
  std::vector<std::string> AnswerKeys(const std::string& gateway_id, absl::Time now) const;
  // An unsigned answer is believed only from a live member that said it
  // does not sign (an older gateway, during an upgrade).
  bool AcceptsUnsigned(const std::string& gateway_id, absl::Time now) const;
  static constexpr absl::Duration kKeysKeptFor = absl::Minutes(10);
  // Every one of `ids` is a member with a fresh lease whose last load report
  // says its loop reads the commands subject (false for none).
  bool AllReadCommands(const std::vector<std::string>& ids, absl::Time now) const;
  // Members with a fresh lease at `now`, sorted.
  std::vector<std::string> LiveIds(absl::Time now) const;
  std::vector<v1::GatewayInfo> List(absl::Time now) const;
  absl::Duration lease() const { return lease_; }

 private:
  struct Member {
    uint64_t token;
    v1::GatewayHello hello;
    absl::Time attached_at;
    absl::Time last_seen;
    int64_t sessions = 0;
    bool snapshot_open = false;  // chunks of a snapshot are arriving
    v1::GatewayLoad load;         // from the last heartbeat
    Evict evict;
    std::string answer_key;
  };
  struct PastKey {
    std::string key;
    absl::Time until;
  };
  // Keeps a leaving member's key for kKeysKeptFor (bounded: a few per
  // gateway, entries for at most kMaxPastKeyGateways gateways).
  void KeepKey(const std::string& gateway_id, Member& m, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static constexpr size_t kMaxPastKeyGateways = 100000;
  bool Fresh(const Member& m, absl::Time now) const { return now - m.last_seen < lease_; }

  const absl::Duration lease_;
  std::atomic<uint64_t> lease_expiries_{0};
  LeaveFn on_leave_;
  mutable absl::Mutex mu_;
  uint64_t next_token_ ABSL_GUARDED_BY(mu_) = 1;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_map<std::string, Member> members_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::vector<PastKey>> past_keys_ ABSL_GUARDED_BY(mu_);
};

}  // namespace switchboard::control
