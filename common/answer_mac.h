#pragma once

#include <string>
#include <string_view>

namespace switchboard {

// Binds a gateway's bus answer to that gateway. Each control replica hands
// every gateway that attaches a random key of its own (ControlWelcome); the
// gateway appends HMAC-SHA256(key, answer bytes) to each answer it sends to
// that replica as BusReply field `mac` (protobuf fields concatenate, so the
// answer parses as before), and the replica accepts an answer for gateway G
// only with G's key. Whoever else is on the bus, holding the gateway's NATS
// login or not, cannot answer for G. Stateless; any thread.

inline constexpr size_t kAnswerKeyBytes = 32;

// A fresh answer key.
std::string NewAnswerKey();
// `body` (a serialized BusReply without `mac`) with its MAC appended.
std::string SignAnswer(std::string_view key, std::string body);
// Splits a signed answer into the bytes the MAC covers and the MAC; false
// (and both empty) when the answer carries no MAC at its end.
bool SplitSignedAnswer(std::string_view data, std::string_view* body, std::string_view* mac);
bool AnswerMacValid(std::string_view key, std::string_view body, std::string_view mac);

}  // namespace switchboard
