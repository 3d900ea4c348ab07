#pragma once

#include <string>

#include "absl/status/status.h"
#include "control/scatter_gather.h"
#include "switchboard/v1/config.pb.h"
#include "switchboard/v1/control.pb.h"

namespace switchboard::control {

// Checks `authorization: apikey KEY` (or `x-api-key: KEY`) against the
// configured API keys. Thread-safe (read-only).
absl::Status CheckApiKey(const v1::Config& config, const std::string& authorization,
                         const std::string& x_api_key);

// Argument checks; INVALID_ARGUMENT / NOT_FOUND with a message naming the field.
absl::Status ValidateUserConnections(const v1::Config& config, const v1::UserConnectionsRequest& r);
absl::Status ValidateTerminateUser(const v1::Config& config, const v1::TerminateUserRequest& r);
absl::Status ValidateDisconnect(const v1::Config& config, const v1::DisconnectRequest& r);

// Turn gathered gateway answers into API responses.
void FillUserConnections(const GatherResult& g, v1::UserConnectionsResponse* out);
void FillTerminateUser(const GatherResult& g, v1::TerminateUserResponse* out);
void FillDisconnect(const GatherResult& g, v1::DisconnectResponse* out);

}  // namespace switchboard::control
