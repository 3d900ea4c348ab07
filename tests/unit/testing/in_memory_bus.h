#pragma once

#include <atomic>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "common/nats_client.h"

namespace switchboard::testing {

// A NATS stand-in: Publish delivers synchronously, on the caller's thread, to
// every subscription whose subject matches (exact, or "prefix.*" for one more
// token). Thread-safe; handlers run without the lock.
class InMemoryBus : public NatsClient {
 public:
  absl::Status Publish(const std::string& subject, const std::string& data,
                       const std::string& reply) override {
    if (!connected_) return absl::UnavailableError("bus down");
    std::vector<Handler> targets;
    {
      absl::MutexLock lock(&mu_);
      ++published_;
      for (const auto& [pattern, handler] : subs_) {
        if (Matches(pattern, subject)) targets.push_back(handler);
      }
    }
    for (auto& h : targets) h(subject, reply, data);
    return absl::OkStatus();
  }
  absl::Status Subscribe(const std::string& subject, Handler handler) override {
    absl::MutexLock lock(&mu_);
    subs_.emplace_back(subject, std::move(handler));
    return absl::OkStatus();
  }
  bool Connected() const override { return connected_; }
  std::string NewInbox() override {
    absl::MutexLock lock(&mu_);
    return "_INBOX.test" + std::to_string(++inboxes_);
  }

  void SetAwaitingAnswers(int calls) override { awaiting_ = calls; }
  int awaiting() const { return awaiting_; }

  void set_connected(bool c) { connected_ = c; }
  int published() const {
    absl::MutexLock lock(&mu_);
    return published_;
  }

 private:
  static bool Matches(const std::string& pattern, const std::string& subject) {
    if (absl::EndsWith(pattern, ".*")) {
      std::string prefix = pattern.substr(0, pattern.size() - 1);
      return absl::StartsWith(subject, prefix) && subject.find('.', prefix.size()) == std::string::npos &&
             subject.size() > prefix.size();
    }
    return pattern == subject;
  }

  std::atomic<int> awaiting_{0};
  mutable absl::Mutex mu_;
  std::vector<std::pair<std::string, Handler>> subs_ ABSL_GUARDED_BY(mu_);
  int published_ ABSL_GUARDED_BY(mu_) = 0;
  int inboxes_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<bool> connected_{true};
};

}  // namespace switchboard::testing
