#pragma once

#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace switchboard::gateway {

// The answer key each control replica gave this gateway (its welcome), by
// the reply subject that replica's requests carry. A key is kept after its
// link drops: a gateway cut from a replica still answers it, authentically,
// over the bus. Thread-safe (control links set, the bus thread and the loop
// read).
//
// A replica asks a gateway from the moment it attached it, and writes its
// welcome on the attach stream in the same instant: a request on the bus
// can reach the gateway before the key does. Its answer, unsigned, is
// thrown away by that replica (counted as keyless), and the call would wait
// for its deadline; so while signing is on (set_signing), such an answer is
// sent unsigned at once, as before, and a copy is kept, bounded, until the
// replica's key comes (Set hands it back, signed, to be sent again) or
// kHoldFor has passed. A gateway that never gets that replica's key (one
// cut from it) is named by it as unauthenticated, as before.
class AnswerKeys {
 public:
  static constexpr absl::Duration kHoldFor = absl::Seconds(5);
  static constexpr size_t kMaxHeldBytes = 16 << 20;

  void set_signing(bool on) {
    absl::MutexLock lock(&mu_);
    signing_ = on;
  }
  // Records a replica's key; returns the answers kept for it, signed, in
  // the order they were made, to be sent again.
  std::vector<std::string> Set(const std::string& reply_subject, const std::string& key, absl::Time now);
  // "" when no replica with this reply subject welcomed this gateway.
  std::string KeyFor(const std::string& reply_subject) const {
    absl::MutexLock lock(&mu_);
    auto it = keys_.find(reply_subject);
    return it == keys_.end() ? std::string() : it->second;
  }

  // Signs an answer for reply_subject in place; without that replica's key
  // yet, leaves it unsigned and keeps a copy to sign when the key comes
  // (unless too much is kept already: kMaxHeldBytes). False if unsigned.
  bool Sign(const std::string& reply_subject, std::string* data, absl::Time now);
  // Answers held now, and ever.
  size_t held() const {
    absl::MutexLock lock(&mu_);
    return held_.size();
  }
  uint64_t held_total() const {
    absl::MutexLock lock(&mu_);
    return held_total_;
  }

 private:
  struct Held {
    std::string reply_subject;
    std::string data;
    absl::Time until;
  };
  void ExpireLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  static constexpr size_t kMaxReplicas = 1024;
  mutable absl::Mutex mu_;
  bool signing_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_map<std::string, std::string> keys_ ABSL_GUARDED_BY(mu_);
  std::vector<Held> held_ ABSL_GUARDED_BY(mu_);
  size_t held_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t held_total_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace switchboard::gateway
