#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace switchboard {

// absl -> gRPC status at the API edge; codes share numbering.
inline grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

}  // namespace switchboard
