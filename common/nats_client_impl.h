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
//
// Two connections to the server: one that publishes (from any thread, see
// PublishNow) and one that receives. The receiving one runs in NATS.c's
// event-loop mode on this client's own thread (epoll): that thread reads
// the socket, and its subscriptions are synchronous ones it drains right
// after each read, so a message goes from the socket to its handler on one
// thread. NATS.c's own way hands every message from its reader thread to a
// delivery thread: a wake-up on the path of every fleet call.
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
  // On the receiving connection (non-blocking, event-loop mode): the write
  // is tried on the calling thread, and only what the socket did not take
  // wakes the receive thread.
  absl::Status PublishFromLoop(const std::string& subject, const std::string& data) override;
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
  // While calls await answers (SetAwaitingAnswers above zero), the receive
  // thread keeps polling its socket without sleeping for up to `window`
  // after each message it got (yielding the CPU to anyone runnable in
  // between) instead of going back to sleep: a fleet call's K answers
  // arrive spread over ~100-300 us, and on a virtualized host each sleep and
  // wake-up costs tens of microseconds. Zero (the default): never. Any thread.
  void SetBusyPoll(absl::Duration window);
  void SetAwaitingAnswers(int calls) override { awaiting_.store(calls, std::memory_order_relaxed); }
  uint64_t SubscribedSession() const override { return subscribed_session_.load(); }
  void SetOnSubscribed(std::function<void()> fn) override {
    absl::MutexLock lock(&on_subscribed_mu_);
    on_subscribed_ = std::move(fn);
  }

 private:
  struct Outgoing {
    std::string subject, reply, data;
  };
  struct Sub {
    Handler handler;
    natsSubscription* sub = nullptr;  // synchronous, on rx_conn_
  };
  static constexpr int kMaxSubs = 16;
  NatsClientImpl() = default;
  void SendLoop();
  // The receiving connection's thread: epoll on its socket, NATS.c's read
  // and write processing, then every subscription drained.
  void RxLoop();
  void DrainSubscriptions();
  void SetRxEvents(uint32_t events, bool add);
  static void OnConnected(natsConnection*, void* closure);
  static void OnRxConnected(natsConnection*, void* closure);
  static void OnReconnected(natsConnection*, void* closure);
  static void OnRxReconnected(natsConnection*, void* closure);
  void Subscribed();
  // NATS.c's event-loop callbacks (called with the connection's lock held,
  // from any thread: the connecting, reconnecting, timer or loop thread).
  static natsStatus EvAttach(void** user, void* loop, natsConnection* nc, natsSock socket);
  static natsStatus EvRead(void* user, bool add);
  static natsStatus EvWrite(void* user, bool add);
  static natsStatus EvDetach(void* user);

  natsConnection* conn_ = nullptr;
  natsConnection* rx_conn_ = nullptr;  // set once Create returns
  absl::Mutex mu_;
  std::deque<Outgoing> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread sender_;
  std::atomic<int64_t> connected_since_ms_{0};
  absl::Notification connected_once_;
  absl::Notification rx_connected_once_;
  std::atomic<uint64_t> subscribed_session_{0};
  absl::Mutex on_subscribed_mu_;
  std::function<void()> on_subscribed_ ABSL_GUARDED_BY(on_subscribed_mu_);

  // Receiving side. Subscriptions are only added (under mu_) until the
  // client goes; the loop reads the first nsubs_ of them.
  std::unique_ptr<Sub> subs_[kMaxSubs];
  std::atomic<int> nsubs_{0};
  std::atomic<natsConnection*> rx_nc_{nullptr};  // as NATS.c gave it to EvAttach
  int epfd_ = -1;
  int wakefd_ = -1;
  std::atomic<bool> rx_stop_{false};
  std::thread rx_thread_;
  absl::Mutex ev_mu_;
  int rx_fd_ ABSL_GUARDED_BY(ev_mu_) = -1;
  uint32_t rx_events_ ABSL_GUARDED_BY(ev_mu_) = 0;
  // Which socket rx_fd_ is; written under ev_mu_, read without it by the
  // loop for each event.
  std::atomic<uint64_t> rx_attaches_{0};
  std::atomic<int> awaiting_{0};
  std::atomic<int64_t> busy_window_ns_{0};
};

// Whether this libnats lets received messages be freed on the thread that
// is done with them instead of waking its garbage-collector thread for
// each (see nats_client_impl.cc). False means the library's own way is used.
bool NatsMessagesFreedInPlace();

}  // namespace switchboard
