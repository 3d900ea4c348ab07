#pragma once

#include <atomic>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <nats/nats.h>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/nats_client.h"

namespace switchboard {

// NATS.c behind NatsClient. Connects in the background and reconnects forever,
// so a process starts and keeps running while NATS is down. Publishes go
// through a bounded queue drained by one sender thread with SendAsap, so no
// caller ever waits on the socket. Thread-safe.
class NatsClientImpl final : public NatsClient {
 public:
  // A tls:// url connects with TLS, verifying the server against `ca_file`.
  static absl::StatusOr<std::unique_ptr<NatsClientImpl>> Create(const std::string& url, const std::string& name,
                                                                const std::string& user = "",
                                                                const std::string& password = "",
                                                                const std::string& ca_file = "");
  // At process end, after every client is gone: waits (bounded) until the
  // NATS library's own threads, which may still run connection callbacks
  // that log, have exited. Call once, from main.
  static void ShutdownLibrary();
  ~NatsClientImpl() override;

  absl::Status Publish(const std::string& subject, const std::string& data,
                       const std::string& reply) override;
  absl::Status PublishNow(const std::string& subject, const std::string& data,
                          const std::string& reply = "") override;
  absl::Status Subscribe(const std::string& subject, Handler handler) override;
  bool Connected() const override;
  // When the current connection to the server came up (InfiniteFuture while
  // disconnected).
  absl::Time ConnectedSince() const;
  std::string NewInbox() override;
  // Waits until the first connection to the server is up and everything
  // subscribed so far is confirmed by it, at most `timeout`. False on timeout.
  bool WaitForFirstConnection(absl::Duration timeout);
  size_t MaxPayload() const override;

 private:
  struct Outgoing {
    std::string subject, reply, data;
  };
  struct Sub {
    Handler handler;
    natsSubscription* sub = nullptr;
    // Set by NATS once the subscription is closed and its handler has
    // returned for the last time: only then may the handler's state go.
    absl::Notification complete;
  };
  NatsClientImpl() = default;
  void SendLoop();
  static void OnMessage(natsConnection*, natsSubscription*, natsMsg* msg, void* closure);
  static void OnSubscriptionComplete(void* closure);
  static void OnConnected(natsConnection*, void* closure);
  static void OnReconnected(natsConnection*, void* closure);

  natsConnection* conn_ = nullptr;
  absl::Mutex mu_;
  std::deque<Outgoing> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::unique_ptr<Sub>> subs_ ABSL_GUARDED_BY(mu_);
  std::thread sender_;
  std::atomic<int64_t> connected_since_ms_{0};
  absl::Notification connected_once_;
};

// Whether this libnats lets received messages be freed on the thread that
// is done with them instead of waking its garbage-collector thread for
// each (see nats_client_impl.cc). False means the library's own way is used.
bool NatsMessagesFreedInPlace();

}  // namespace switchboard
