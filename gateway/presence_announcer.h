#pragma once

#include <string>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/nats_client.h"

namespace switchboard::gateway {

// Says "this gateway is on the bus" on the presence subject every
// `interval`, so that every control replica waits for its answers even when
// its Attach stream to that replica is cut; on Stop, says it is leaving.
// Owns one thread; Start and Stop from the main or signal thread.
class PresenceAnnouncer {
 public:
  PresenceAnnouncer(NatsClient* bus, std::string subject, std::string gateway_id, absl::Duration interval)
      : bus_(bus), subject_(std::move(subject)), gateway_id_(std::move(gateway_id)), interval_(interval) {}
  ~PresenceAnnouncer() { Stop(); }

  void Start();
  // Idempotent. Announces leaving (queued; sent before the bus closes).
  void Stop();

 private:
  void Announce(bool leaving);

  NatsClient* bus_;
  const std::string subject_;
  const std::string gateway_id_;
  const absl::Duration interval_;
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace switchboard::gateway
