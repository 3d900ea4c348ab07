#include "gateway/presence_announcer.h"

#include "gateway/hub.h"
#include "switchboard/v1/bus.pb.h"

namespace switchboard::gateway {

void PresenceAnnouncer::Start() {
  // Back on the bus after an outage: said at once, not at the next beat,
  // so that control asks again what this gateway missed meanwhile.
  bus_->SetOnSubscribed([this] { Announce(false); });
  thread_ = std::thread([this] {
    do {
      Announce(false);
    } while (!stop_.WaitForNotificationWithTimeout(interval_));
  });
}

void PresenceAnnouncer::Stop() {
  if (!thread_.joinable()) return;
  bus_->SetOnSubscribed(nullptr);
  stop_.Notify();
  thread_.join();
  Announce(true);
}

void PresenceAnnouncer::Announce(bool leaving) {
  v1::BusPresence p;
  p.set_format_version(Hub::kBusFormatVersion);
  p.set_gateway_id(gateway_id_);
  p.set_leaving(leaving);
  p.set_bus_session(bus_->SubscribedSession());
  // While the bus is down this fails; the next one goes out once it is back.
  (void)bus_->Publish(subject_, p.SerializeAsString());
}

}  // namespace switchboard::gateway
