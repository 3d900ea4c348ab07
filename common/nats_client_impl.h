#pragma once

#include <atomic>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <sys/epoll.h>

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
// delivery thread: a wake-up on the path of every fleet call. A gateway
// adds a third (StartLoopReceiver), read the same way by its event loop.
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
  // A third connection, receiving only, for an outside event loop to pump
  // (see NatsClient::LoopReceiverFd), named as the client with " loop"
  // after it: connects in the background, as the others do. Once, before
  // SubscribeOnLoop.
  absl::Status StartLoopReceiver();
  int LoopReceiverFd() const override { return loop_ ? loop_->epfd : -1; }
  absl::Status SubscribeOnLoop(const std::string& subject, Handler handler) override;
  void PumpLoopReceiver() override;
  bool LoopReceiverConnected() const override;

 private:
  struct Outgoing {
    std::string subject, reply, data;
  };
  struct Sub {
    Handler handler;
    natsSubscription* sub = nullptr;  // synchronous, on its receiver's connection
  };
  static constexpr int kMaxSubs = 16;
  // A receiving connection in NATS.c's event-loop mode: its socket sits in
  // an epoll set of its own, and whoever polls that set pumps it (Pump):
  // NATS.c's read and write processing, then every subscription drained, so
  // handlers run on the pumping thread. The client's receive thread pumps
  // `rx_`; an outside event loop pumps `loop_` (StartLoopReceiver).
  struct Receiver {
    NatsClientImpl* client = nullptr;
    natsConnection* conn = nullptr;  // set once connected (or connecting)
    std::atomic<natsConnection*> nc{nullptr};  // as NATS.c gave it to EvAttach
    int epfd = -1;
    absl::Mutex ev_mu;
    int fd ABSL_GUARDED_BY(ev_mu) = -1;
    uint32_t events ABSL_GUARDED_BY(ev_mu) = 0;
    // Which socket fd is; written under ev_mu, read without it by the pump
    // for each event.
    std::atomic<uint64_t> attaches{0};
    // Only added (under the client's mu_) until the client goes; the pump
    // reads the first nsubs of them.
    std::unique_ptr<Sub> subs[kMaxSubs];
    std::atomic<int> nsubs{0};
    absl::Notification connected_once;
    void SetEvents(uint32_t events, bool add);
    // What epoll_wait returned on epfd (tag 0, a caller's own wake-up, is
    // skipped), then every subscription drained.
    void Pump(const epoll_event* ready, int n);
    absl::Status Subscribe(absl::Mutex* mu, const std::string& subject, Handler handler);
    // Unsubscribes, closes the connection (pumping may go on meanwhile).
    void Close();
    // After the pumping has stopped.
    void Destroy();
  };
  NatsClientImpl() = default;
  void SendLoop();
  // The receiving connection's thread: epoll on rx_'s set, and rx_ pumped.
  void RxLoop();
  static void OnConnected(natsConnection*, void* closure);
  static void OnRxConnected(natsConnection*, void* closure);
  static void OnReconnected(natsConnection*, void* closure);
  static void OnRxReconnected(natsConnection*, void* closure);
  static void OnLoopConnected(natsConnection*, void* closure);
  static void OnLoopReconnected(natsConnection*, void* closure);
  void Subscribed();
  // The options every connection shares; with `receiver`, event-loop mode
  // on it.
  using OptsPtr = std::unique_ptr<natsOptions, void (*)(natsOptions*)>;
  absl::StatusOr<OptsPtr> MakeOptions(Receiver* receiver, natsConnectionHandler connected,
                                      natsConnectionHandler reconnected);
  // NATS.c's event-loop callbacks (called with the connection's lock held,
  // from any thread: the connecting, reconnecting, timer or loop thread).
  // `loop` and `user` are the Receiver.
  static natsStatus EvAttach(void** user, void* loop, natsConnection* nc, natsSock socket);
  static natsStatus EvRead(void* user, bool add);
  static natsStatus EvWrite(void* user, bool add);
  static natsStatus EvDetach(void* user);

  std::string url_, name_, user_, password_, ca_file_;
  natsConnection* conn_ = nullptr;
  absl::Mutex mu_;
  std::deque<Outgoing> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread sender_;
  std::atomic<int64_t> connected_since_ms_{0};
  absl::Notification connected_once_;
  std::atomic<uint64_t> subscribed_session_{0};
  absl::Mutex on_subscribed_mu_;
  std::function<void()> on_subscribed_ ABSL_GUARDED_BY(on_subscribed_mu_);

  Receiver rx_;
  int wakefd_ = -1;
  std::atomic<bool> rx_stop_{false};
  std::thread rx_thread_;
  std::atomic<int> awaiting_{0};
  std::atomic<int64_t> busy_window_ns_{0};
  // The outside loop's receiver: present once StartLoopReceiver succeeded.
  std::unique_ptr<Receiver> loop_;
};

// Whether this libnats lets received messages be freed on the thread that
// is done with them instead of waking its garbage-collector thread for
// each (see nats_client_impl.cc). False means the library's own way is used.
bool NatsMessagesFreedInPlace();

}  // namespace switchboard
