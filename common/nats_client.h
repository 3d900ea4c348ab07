#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"

namespace switchboard {

// The bus as the rest of the code sees it. Publish() never blocks on the
// network: it queues and returns. Handlers run on a bus thread and must only
// post work elsewhere or touch thread-safe state.
class NatsClient {
 public:
  using Handler = std::function<void(const std::string& subject, const std::string& reply,
                                     const std::string& data)>;
  virtual ~NatsClient() = default;

  virtual absl::Status Publish(const std::string& subject, const std::string& data,
                               const std::string& reply = "") = 0;
  // Sends on the calling thread, for a thread that should not hand off to
  // the sender (a subscription handler's reply, control's request from the
  // gRPC thread): with `reply`, a request. It may wait briefly on the
  // socket, so never call it from an event loop. By default, Publish().
  virtual absl::Status PublishNow(const std::string& subject, const std::string& data,
                                  const std::string& reply = "") {
    return Publish(subject, data, reply);
  }
  // Sends from an event loop's thread without a hand-off and without ever
  // waiting on the socket: what the socket takes now goes at once, the rest
  // is left to the client's own thread. By default, Publish().
  virtual absl::Status PublishFromLoop(const std::string& subject, const std::string& data) {
    return Publish(subject, data);
  }
  // Subscription lives as long as the client.
  virtual absl::Status Subscribe(const std::string& subject, Handler handler) = 0;
  // True while the connection to the server is up.
  virtual bool Connected() const = 0;
  // A fresh, unique inbox prefix for reply subjects.
  virtual std::string NewInbox() = 0;
  // The largest message the server takes (its max_payload; 1 MiB by default).
  virtual size_t MaxPayload() const { return 1 << 20; }
  // A hint: this many calls now await answers on this client's
  // subscriptions (the receiving side may poll rather than sleep while any
  // do). Any thread; by default ignored.
  virtual void SetAwaitingAnswers(int calls) { (void)calls; }
  // How many times the subscriptions came up: 1 after the first connection,
  // one more after each reconnect; 0 before.
  virtual uint64_t SubscribedSession() const { return 0; }
  // Called on a bus thread each time the subscriptions come up (the first
  // connection and every reconnect). Set before the first connection.
  virtual void SetOnSubscribed(std::function<void()> fn) { (void)fn; }

  // Receiving on an outside event loop's thread, with no hand-off: a client
  // that has a loop receiver gives a descriptor (>= 0) that turns readable
  // when there is something to do; the loop then calls PumpLoopReceiver(),
  // which runs SubscribeOnLoop's handlers on the loop's thread. -1: none
  // (SubscribeOnLoop fails).
  virtual int LoopReceiverFd() const { return -1; }
  virtual absl::Status SubscribeOnLoop(const std::string& subject, Handler handler) {
    (void)subject;
    (void)handler;
    return absl::UnimplementedError("no loop receiver");
  }
  virtual void PumpLoopReceiver() {}
  // Any thread.
  virtual bool LoopReceiverConnected() const { return false; }
};

}  // namespace switchboard
