#pragma once

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "switchboard/v1/config.pb.h"

namespace switchboard {

// Whether the config turns TLS on (cert_file and key_file set; validated by
// ValidateConfig).
inline bool TlsEnabled(const v1::Config& config) { return !config.tls().cert_file().empty(); }

// Control's gRPC server credentials: TLS with the config's certificate, or
// insecure when TLS is off. Reads the files; any thread.
std::shared_ptr<grpc::ServerCredentials> ServerCredentials(const v1::Config& config);

// Credentials for calling control: TLS verified against tls.ca_file, or
// insecure when TLS is off. Any thread.
std::shared_ptr<grpc::ChannelCredentials> ChannelCredentials(const v1::Config& config);

}  // namespace switchboard
