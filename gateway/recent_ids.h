#pragma once

#include <cstddef>
#include <deque>
#include <string>

#include "absl/container/node_hash_set.h"
#include "absl/time/time.h"

namespace switchboard::gateway {

// The IDs of the commands a gateway has run, each kept as long as its
// sender may ask it again, so that a re-asked command is never run twice
// (whatever the call rate: a window counted in IDs is too short under a
// storm). Bounded: past `max_ids` the oldest go first (a re-ask of one of
// those would run again; the count of such early evictions is kept).
// Not thread-safe; time is passed in.
class RecentIds {
 public:
  explicit RecentIds(size_t max_ids = kDefaultMaxIds) : max_ids_(max_ids) {}
  static constexpr size_t kDefaultMaxIds = 1 << 20;

  // True the first time `id` is seen within its window; it is then kept
  // until `now + remember`.
  bool FirstTime(const std::string& id, absl::Time now, absl::Duration remember);
  size_t size() const { return ids_.size(); }
  // IDs let go before their time because the bound was reached.
  uint64_t evicted_early() const { return evicted_early_; }

 private:
  struct Entry {
    absl::Time until;
    const std::string* id;  // the set's own copy (a node set: it stays put)
  };
  void DropOldest();
  size_t max_ids_;
  absl::node_hash_set<std::string> ids_;
  // In arrival order. A later entry may expire before an earlier one (a
  // shorter window): it is then kept a little longer, never shorter.
  std::deque<Entry> order_;
  uint64_t evicted_early_ = 0;
};

}  // namespace switchboard::gateway
