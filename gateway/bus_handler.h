#pragma once

#include <atomic>
#include <string>

#include "absl/status/status.h"
#include "common/dispatcher.h"
#include "common/nats_client.h"
#include "gateway/hub.h"

namespace switchboard::gateway {

// Receives control's broadcasts on a NATS thread, posts each to the loop, and
// publishes the hub's answer to the request's reply subject. Never touches
// the hub off the loop thread.
class BusHandler {
 public:
  BusHandler(NatsClient* bus, Dispatcher* loop, Hub* hub) : bus_(bus), loop_(loop), hub_(hub) {}
  absl::Status Start(const std::string& cluster);
  uint64_t malformed() const { return malformed_.load(); }

 private:
  void OnMessage(const std::string& reply_to, const std::string& data);

  NatsClient* bus_;
  Dispatcher* loop_;
  Hub* hub_;
  std::atomic<uint64_t> malformed_{0};
};

}  // namespace switchboard::gateway
