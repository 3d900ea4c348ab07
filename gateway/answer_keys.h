#pragma once

#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"

namespace switchboard::gateway {

// The answer key each control replica gave this gateway (its welcome), by
// the reply subject that replica's requests carry. A key is kept after its
// link drops: a gateway cut from a replica still answers it, authentically,
// over the bus. Thread-safe (control links set, the bus thread reads).
class AnswerKeys {
 public:
  void Set(const std::string& reply_subject, const std::string& key) {
    absl::MutexLock lock(&mu_);
    if (keys_.size() >= kMaxReplicas && !keys_.contains(reply_subject)) keys_.clear();  // bounded; links re-welcome
    keys_[reply_subject] = key;
  }
  // "" when no replica with this reply subject welcomed this gateway.
  std::string KeyFor(const std::string& reply_subject) const {
    absl::MutexLock lock(&mu_);
    auto it = keys_.find(reply_subject);
    return it == keys_.end() ? std::string() : it->second;
  }

 private:
  static constexpr size_t kMaxReplicas = 1024;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::string> keys_ ABSL_GUARDED_BY(mu_);
};

}  // namespace switchboard::gateway
