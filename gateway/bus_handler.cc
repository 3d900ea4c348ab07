#include "gateway/bus_handler.h"

#include <memory>

#include "common/answer_mac.h"
#include "common/config.h"
#include "gateway/record_chunks.h"
#include "spdlog/spdlog.h"
#include "switchboard/v1/bus.pb.h"

namespace switchboard::gateway {

std::vector<v1::BusReply> SplitReply(v1::BusReply reply, size_t max_bytes) {
  std::vector<v1::BusReply> out;
  if (reply.ByteSizeLong() <= max_bytes) {
    out.push_back(std::move(reply));
    return out;
  }
  std::vector<v1::SessionRecord> sessions(std::make_move_iterator(reply.mutable_sessions()->begin()),
                                          std::make_move_iterator(reply.mutable_sessions()->end()));
  v1::BusReply header = std::move(reply);
  header.clear_sessions();
  const size_t header_bytes = header.ByteSizeLong() + 16;  // part, parts
  const size_t room = max_bytes > header_bytes + 1024 ? max_bytes - header_bytes : 1024;
  for (auto& chunk : ChunkRecords(std::move(sessions), room)) {
    v1::BusReply part;
    part.set_format_version(header.format_version());
    part.set_request_id(header.request_id());
    part.set_gateway_id(header.gateway_id());
    for (auto& s : chunk) *part.add_sessions() = std::move(s);
    out.push_back(std::move(part));
  }
  if (out.empty()) out.push_back(header);
  out.front().set_closed(header.closed());
  out.front().set_error(header.error());
  for (size_t i = 0; i < out.size(); ++i) {
    out[i].set_part(static_cast<uint32_t>(i));
    out[i].set_parts(static_cast<uint32_t>(out.size()));
  }
  return out;
}

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
  if (Hub::IsQuery(*request)) {
    // Reads only: answered here, on the bus thread, and sent from it (no
    // loop wake-up, no sender-thread hand-off: two thread hops fewer).
    Send(reply_to, hub_->AnswerQuery(*request), /*now=*/true);
    return;
  }
  if (!FirstTime(request->request_id())) {
    spdlog::debug("bus: {} heard again; already done", request->request_id());
    return;
  }
  // If the loop's queue is full the request is dropped: control names this
  // gateway as missing, which is the truth.
  (void)loop_->Post([this, request, reply_to] {
    spdlog::debug("bus: handling {}", request->request_id());
    Send(reply_to, hub_->HandleBusRequest(*request), /*now=*/false);
  });
}

bool BusHandler::FirstTime(const std::string& request_id) {
  absl::MutexLock lock(&recent_mu_);
  if (!recent_.insert(request_id).second) return false;
  recent_order_.push_back(request_id);
  if (recent_order_.size() > kRecent) {
    recent_.erase(recent_order_.front());
    recent_order_.pop_front();
  }
  return true;
}

void BusHandler::Send(const std::string& reply_to, v1::BusReply reply, bool now) {
  const size_t limit = bus_->MaxPayload() > 4096 ? bus_->MaxPayload() - 1024 : bus_->MaxPayload();
  // Signed with the asking replica's key, so that only this gateway can
  // answer as itself (no key yet from that replica: unsigned, and it is
  // named as missing there).
  const std::string key = keys_ != nullptr ? keys_->KeyFor(reply_to) : std::string();
  for (auto& part : SplitReply(std::move(reply), limit)) {
    std::string data = part.SerializeAsString();
    if (!key.empty()) data = SignAnswer(key, std::move(data));
    auto st = now ? bus_->PublishNow(reply_to, data) : bus_->Publish(reply_to, data);
    if (!st.ok()) {
      // Control names this gateway as missing; nothing else to do here.
      spdlog::warn("bus: reply not sent: {}", std::string(st.message()));
      break;
    }
  }
}

}  // namespace switchboard::gateway
