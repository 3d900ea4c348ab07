#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "switchboard/v1/client.pb.h"

namespace switchboard::gateway {

// Centrifugo client protocol v2, JSON encoding: a frame holds one or more
// commands separated by newlines; replies are encoded the same way. No I/O.
// Stateless; any thread.
class CentrifugeJsonCodec {
 public:
  // Fails with INVALID_ARGUMENT on anything that is not a batch of JSON
  // command objects (the caller closes with 3501).
  static absl::StatusOr<std::vector<v1::ClientCommand>> DecodeCommands(std::string_view frame);
  static std::string EncodeReply(const v1::ClientReply& reply);
  // Server ping: an empty reply, `{}`.
  static std::string EncodePing() { return "{}"; }
};

// Centrifugo client protocol v2, protobuf encoding (binary frames): a frame
// holds one or more varint-length-delimited commands; replies likewise.
// Stateless; any thread.
class CentrifugeProtobufCodec {
 public:
  static absl::StatusOr<std::vector<v1::ClientCommand>> DecodeCommands(std::string_view frame);
  static std::string EncodeReply(const v1::ClientReply& reply);
  // Server ping: an empty reply, i.e. one zero-length record.
  static std::string EncodePing() { return std::string(1, '\0'); }
};

// Centrifugo disconnect codes used by the gateway.
namespace close_code {
inline constexpr int kShutdown = 3001;       // reconnect
inline constexpr int kExpired = 3005;        // reconnect
inline constexpr int kSlow = 3008;           // reconnect
inline constexpr int kNoPong = 3012;         // reconnect
inline constexpr int kInvalidToken = 3500;   // terminal
inline constexpr int kBadRequest = 3501;     // terminal
inline constexpr int kStale = 3502;          // terminal
inline constexpr int kForceDisconnect = 3503;// terminal
inline constexpr int kMessageTooBig = 1009;  // RFC 6455
inline constexpr int kTryAgainLater = 1013;  // RFC 6455, client reconnects elsewhere
}  // namespace close_code

// Centrifugo error codes sent in replies.
namespace error_code {
inline constexpr int kMethodNotFound = 104;
inline constexpr int kNotAvailable = 108;
inline constexpr int kTokenExpired = 109;
}  // namespace error_code

}  // namespace switchboard::gateway
