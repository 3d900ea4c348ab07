#include "gateway/bus_handler.h"

#include <memory>

#include "common/config.h"
#include "spdlog/spdlog.h"
#include "switchboard/v1/bus.pb.h"

namespace switchboard::gateway {

absl::Status BusHandler::Start(const std::string& cluster) {
  return bus_->Subscribe(GatewaysSubject(cluster),
                         [this](const std::string&, const std::string& reply, const std::string& data) {
                           OnMessage(reply, data);
                         });
}

void BusHandler::OnMessage(const std::string& reply_to, const std::string& data) {
  auto request = std::make_shared<v1::BusRequest>();
  if (reply_to.empty() || !request->ParseFromString(data)) {
    if (malformed_.fetch_add(1) == 0) spdlog::warn("bus: dropping malformed request");
    return;
  }
  spdlog::debug("bus: request {} -> {}", request->request_id(), reply_to);
  loop_->Post([this, request, reply_to] {
    spdlog::debug("bus: handling {}", request->request_id());
    v1::BusReply reply = hub_->HandleBusRequest(*request);
    auto st = bus_->Publish(reply_to, reply.SerializeAsString());
    if (!st.ok()) spdlog::warn("bus: reply not sent: {}", std::string(st.message()));
  });
}

}  // namespace switchboard::gateway
