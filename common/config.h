#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "switchboard/v1/config.pb.h"

namespace switchboard {

// Parses YAML (JSON is YAML too) into the config schema. String values may use
// ${VAR} or ${VAR:-default}; an unset VAR without default is an error. Errors
// name the field path, e.g. "apps[0].secret: expected a string".
absl::StatusOr<v1::Config> ParseConfig(const std::string& text);

// Which process reads the config. A gateway never needs the API keys, the
// HTTP proxy's token or control's NATS password, and control never needs the
// gateways' NATS password: for those roles they are not required, and are
// dropped from memory if present (in Kubernetes each pod gets only its own
// secrets; the shared ConfigMap writes the others as ${VAR:-}).
enum class ConfigRole { kAll, kControl, kGateway };

// Checks required fields and ranges, and fills defaults. The error names the
// first bad field.
absl::Status ValidateConfig(v1::Config& config, ConfigRole role = ConfigRole::kAll);

// A secret still at a value this repository publishes (the dev defaults
// "…-change-me", the production examples' "REPLACE-with-…"): anyone who read
// the repository could sign client tokens, call the API or join the fleet.
bool IsPlaceholderSecret(const std::string& value);

// Refuses a config whose secrets, among those this role uses (after
// ValidateConfig dropped the others), are placeholders; the error names the
// first such field and says how to make a real one.
absl::Status RefusePlaceholderSecrets(const v1::Config& config);

// Dev mode (placeholder secrets accepted, with a warning): asked for with the
// binaries' --dev flag or SWITCHBOARD_DEV=1 in the environment
// (scripts/run.sh and the dev overlay). Never in production.
bool DevMode(bool dev_flag);

// Reads, parses and validates a file.
absl::StatusOr<v1::Config> LoadConfig(const std::string& path, ConfigRole role = ConfigRole::kAll);

// The app with this ID, or nullptr.
// The NATS subject control broadcasts its requests on; gateways subscribe to
// it. User and app IDs never appear in subjects.
std::string GatewaysSubject(const std::string& cluster);
// Gateways answer on subjects under this prefix (each control replica's
// inbox is `<prefix>.<unique>`); the only subjects gateways may publish to.
std::string RepliesSubjectPrefix(const std::string& cluster);
// Gateways announce themselves here (BusPresence); control listens.
std::string PresenceSubject(const std::string& cluster);
// Control publishes a command (terminate, disconnect, send) here instead of
// on GatewaysSubject when every gateway it asks reads it: a gateway's event
// loop reads this one from a NATS connection of its own (no thread
// hand-off; GatewayLoad.commands_on_loop).
std::string CommandsSubject(const std::string& cluster);


const v1::AppConfig* FindApp(const v1::Config& config, const std::string& app_id);

// Centrifugo's personal channel of `user_id` in `app`: "#<user>", or
// "<namespace>:#<user>" with the app's personal_channel_namespace.
std::string PersonalChannel(const v1::AppConfig* app, const std::string& user_id);

// gateway.max_session_bytes, its default where unset.
inline constexpr uint32_t kDefaultMaxSessionBytes = 8192;
inline size_t MaxSessionBytes(const v1::Config& config) {
  return config.gateway().max_session_bytes() ? config.gateway().max_session_bytes() : kDefaultMaxSessionBytes;
}

}  // namespace switchboard
