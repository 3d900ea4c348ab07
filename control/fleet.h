#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "switchboard/v1/control.pb.h"
#include "switchboard/v1/registry.pb.h"

namespace switchboard::control {

// Gateways attached to this control replica. A gateway is live while its
// Attach stream is open. Thread-safe (gRPC reactions and API calls).
class Fleet {
 public:
  // Returns a token naming this attachment; a re-attach under the same ID
  // replaces the old one, whose later Detach is then ignored.
  uint64_t Attach(const v1::GatewayHello& hello, absl::Time now);
  void Detach(const std::string& gateway_id, uint64_t token);
  void ApplySnapshot(const std::string& gateway_id, uint64_t token, const v1::SessionSnapshot& s);
  void ApplyDelta(const std::string& gateway_id, uint64_t token, const v1::SessionDelta& d);

  std::vector<std::string> LiveIds() const;
  std::vector<v1::GatewayInfo> List() const;

 private:
  struct Member {
    uint64_t token;
    v1::GatewayHello hello;
    absl::Time attached_at;
    int64_t sessions = 0;
  };
  mutable absl::Mutex mu_;
  uint64_t next_token_ ABSL_GUARDED_BY(mu_) = 1;
  absl::flat_hash_map<std::string, Member> members_ ABSL_GUARDED_BY(mu_);
};

}  // namespace switchboard::control
