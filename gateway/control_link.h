#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/dispatcher.h"
#include "gateway/transport.h"
#include "switchboard/v1/registry.pb.h"

namespace grpc {
class ChannelCredentials;
class ClientContext;
}

namespace switchboard::gateway {

// Keeps this gateway attached to one control replica: hello, a full snapshot
// on every (re)attach, then batched opened/closed deltas; reconnects with
// capped exponential backoff. Session events arrive on the loop thread and
// are only queued here; the gRPC work runs on the link's own threads.
class ControlLink final : public SessionObserver {
 public:
  using SnapshotFn = std::function<std::vector<v1::SessionRecord>()>;  // runs on the loop
  struct Options {
    std::string cluster_token;                        // presented on Attach
    absl::Duration heartbeat = absl::Seconds(1);      // a heartbeat this often keeps the lease
    absl::Duration lease = absl::Seconds(3);          // a dead control is noticed within this
    std::shared_ptr<grpc::ChannelCredentials> credentials;  // null: insecure
    std::string tls_name;  // the name control's certificate carries (the configured host)
    // What the heartbeat reports; called on the link's thread, must be cheap
    // and thread-safe.
    std::function<v1::GatewayLoad()> load;
    // Called with control's welcome (its answer key for this gateway), on
    // the link's reader thread.
    std::function<void(const v1::ControlWelcome&)> on_welcome;
  };
  ControlLink(std::string address, v1::GatewayHello hello, Dispatcher* loop, SnapshotFn snapshot,
              Options options);
  ~ControlLink() override;

  void Start();
  // Ends the stream (the control service drops this gateway) and joins.
  void Stop();
  bool attached() const { return attached_.load(); }
  // Times this link got attached (the first time and every re-attach).
  uint64_t attaches() const { return attaches_.load(std::memory_order_relaxed); }
  // Attempts in a row that did not get attached (for tests).
  int failed_attempts() const { return failed_attempts_.load(); }

  void OnSessionOpened(const v1::SessionRecord& record) override;
  void OnSessionClosed(const std::string& client_id) override;

 private:
  void Run();
  // The longest wait between two attempts.
  absl::Duration MaxBackoff() const;
  // One attach attempt; returns when the stream breaks or Stop() is called.
  void AttachOnce();
  // This gateway's sessions, taken on the loop in one turn.
  bool TakeSnapshot(std::vector<v1::SessionRecord>* out);
  // A failed attempt (never attached): logged when the failures start, when
  // the reason changes, and every kFailureLogEvery while they go on, not
  // once per retry.
  void LogFailedAttempt(const std::string& why);

  const std::string address_;
  const v1::GatewayHello hello_;
  Dispatcher* loop_;
  SnapshotFn snapshot_;
  const Options options_;
  std::atomic<bool> attached_{false};
  std::atomic<uint64_t> attaches_{0};
  std::atomic<int> failed_attempts_{0};  // written by Run's thread only
  // Run's thread only: what was last logged about failed attempts.
  std::string last_failure_logged_;
  absl::Time last_failure_log_ = absl::InfinitePast();

  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool collecting_ ABSL_GUARDED_BY(mu_) = false;  // a stream is up: changes are deltas
  bool overflow_ ABSL_GUARDED_BY(mu_) = false;    // the delta queue hit its bound
  bool Overflowing() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  grpc::ClientContext* ctx_ ABSL_GUARDED_BY(mu_) = nullptr;
  v1::SessionDelta pending_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};


}  // namespace switchboard::gateway
