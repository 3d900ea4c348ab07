#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace switchboard::control {

// The gateways heard on the bus's presence subject, each for one lease
// after its last announcement. A gateway whose Attach stream to this
// replica is cut (or never came up) still holds sessions and answers on the
// bus: calls wait for it as for a member, so that no answer is complete
// without it. Thread-safe (the bus thread, API calls, the sweeper).
class PresenceTable {
 public:
  explicit PresenceTable(absl::Duration lease) : lease_(lease) {}

  // True when the gateway is new here or announces another bus session than
  // before (it was off the bus: requests published meanwhile never reached
  // it).
  bool Seen(const std::string& gateway_id, absl::Time now, uint64_t bus_session = 0);
  // A clean stop: not waited for any more.
  void Left(const std::string& gateway_id);
  // After this replica did not run for a while: every entry starts afresh.
  void RenewAll(absl::Time now);
  bool Present(const std::string& gateway_id, absl::Time now) const;
  // Heard within a lease of `now`, sorted.
  std::vector<std::string> PresentIds(absl::Time now) const;
  // The sweep: IDs whose lease ran out since the last sweep (each once per
  // silence); forgets the long silent.
  std::vector<std::string> Expire(absl::Time now);
  // Bound on the table (IDs come from whoever holds the gateway credential).
  static constexpr size_t kMaxEntries = 100000;

 private:
  const absl::Duration lease_;
  mutable absl::Mutex mu_;
  struct Entry {
    absl::Time last_heard;
    bool expired = false;  // reported by Expire since it was last heard
    uint64_t bus_session = 0;
  };
  absl::flat_hash_map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
};

}  // namespace switchboard::control
