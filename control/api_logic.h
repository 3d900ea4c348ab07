#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "control/scatter_gather.h"
#include "switchboard/v1/config.pb.h"
#include "switchboard/v1/control.pb.h"

namespace switchboard::control {

// Checks `authorization: apikey KEY` (or `x-api-key: KEY`) against the
// configured API keys. Thread-safe (read-only).
// `key_name`, when given, is set to the matching key's name
// (api_key_names, or "api_keys[i]"): what the audit trail records.
absl::Status CheckApiKey(const v1::Config& config, const std::string& authorization,
                         const std::string& x_api_key, std::string* key_name = nullptr);

// Argument checks; INVALID_ARGUMENT / NOT_FOUND with a message naming the field.
absl::Status ValidateUserConnections(const v1::Config& config, const v1::UserConnectionsRequest& r);
absl::Status ValidateTerminateUser(const v1::Config& config, const v1::TerminateUserRequest& r);
absl::Status ValidateDisconnect(const v1::Config& config, const v1::DisconnectRequest& r);

// SendToUser / SendToClient: the arguments checked and the bus request
// built (the payload serialised to JSON once, within control.max_send_bytes),
// or INVALID_ARGUMENT / NOT_FOUND naming the field. Nothing is sent on error.
absl::StatusOr<v1::BusRequest> SendToUserRequest(const v1::Config& config, const v1::SendToUserRequest& r);
absl::StatusOr<v1::BusRequest> SendToClientRequest(const v1::Config& config, const v1::SendToClientRequest& r);

// UserConnections pages: the client ID a page token stands for ("" for
// none), or INVALID_ARGUMENT.
absl::StatusOr<std::string> PageCursor(const std::string& page_token);
inline constexpr uint32_t kMaxPageSize = 10000;

// Turn gathered gateway answers into API responses. With `page_size`, at
// most that many connections after `after` (client ID order), and a
// next_page_token when more were there.
void FillUserConnections(const GatherResult& g, v1::UserConnectionsResponse* out, uint32_t page_size = 0,
                         const std::string& after = "");
void FillTerminateUser(const GatherResult& g, v1::TerminateUserResponse* out);
void FillDisconnect(const GatherResult& g, v1::DisconnectResponse* out);
void FillSendToUser(const GatherResult& g, v1::SendToUserResponse* out);
// Several sends (one per user) answered as one: sessions delivered, summed,
// and one coverage (complete only if every one was).
uint32_t Delivered(const GatherResult& g);
void MergeCoverage(const std::vector<GatherResult>& all, v1::Coverage* out);

// Pusher's trigger and batch, and Centrifugo's publish and broadcast, as
// the SendToUser requests they stand for (one per channel, in order), or
// the error Pusher or Centrifugo give (INVALID_ARGUMENT; NOT_FOUND for a
// channel that is not a personal one, Centrifugo's "unknown channel").
absl::StatusOr<std::vector<v1::BusRequest>> PusherTriggerRequests(const v1::Config& config,
                                                                   const v1::PusherTriggerRequest& r);
absl::StatusOr<std::vector<v1::BusRequest>> PusherBatchRequests(const v1::Config& config,
                                                                 const v1::PusherTriggerBatchRequest& r);
absl::StatusOr<v1::BusRequest> CentrifugoPublishRequest(const v1::Config& config, const std::string& channel,
                                                        const google::protobuf::Value& data,
                                                        const std::string& b64data);
// Centrifugo's broadcast takes each channel on its own, as Centrifugo does:
// one that cannot be published gets its own error (102 not a personal
// channel, 107 empty or a bad user ID or data) and the others are sent.
// What concerns the call (no channel, more than 1000, b64data) is its error.
struct CentrifugoChannelRequest {
  std::optional<v1::BusRequest> request;  // unset: `error` says why
  v1::CentrifugoError error;
};
absl::StatusOr<std::vector<CentrifugoChannelRequest>> CentrifugoBroadcastRequests(
    const v1::Config& config, const std::vector<std::string>& channels, const google::protobuf::Value& data,
    const std::string& b64data);
void FillSendToClient(const GatherResult& g, v1::SendToClientResponse* out);

}  // namespace switchboard::control
