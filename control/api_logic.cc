#include "control/api_logic.h"

#include <algorithm>
#include <regex>
#include <set>
#include <string_view>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/config.h"
#include "common/crypto.h"
#include "common/json_depth.h"
#include "nlohmann/json.hpp"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"

namespace switchboard::control {
namespace {

constexpr size_t kMaxIdLength = 256;
constexpr int kMaxExcept = 10000;

absl::Status CheckId(const std::string& field, const std::string& value) {
  if (value.empty()) return absl::InvalidArgumentError(field + " must not be empty");
  if (value.size() > kMaxIdLength) {
    return absl::InvalidArgumentError(absl::StrCat(field, " is longer than ", kMaxIdLength, " bytes"));
  }
  return absl::OkStatus();
}

absl::Status CheckApp(const v1::Config& config, const std::string& app_id) {
  if (auto st = CheckId("app_id", app_id); !st.ok()) return st;
  if (FindApp(config, app_id) == nullptr) return absl::NotFoundError("unknown app \"" + app_id + "\"");
  return absl::OkStatus();
}

absl::Status CheckClose(uint32_t code, const std::string& reason) {
  if (code != 0 && (code < 3000 || code > 4999)) {
    return absl::InvalidArgumentError("code must be 0 (default) or between 3000 and 4999");
  }
  // A close frame carries at most 123 bytes of reason.
  if (reason.size() > 120) return absl::InvalidArgumentError("reason is longer than 120 bytes");
  return absl::OkStatus();
}

void FillCoverage(const GatherResult& g, v1::Coverage* c) {
  c->set_complete(g.complete);
  c->set_incomplete_reason(g.incomplete_reason);
  for (const auto& id : g.asked) c->add_gateways_asked(id);
  for (const auto& [id, reply] : g.answers) c->add_gateways_answered(id);
  for (const auto& id : g.missing) c->add_gateways_missing(id);
  c->mutable_missing_reasons()->insert(g.missing_reasons.begin(), g.missing_reasons.end());
}

}  // namespace

absl::Status CheckApiKey(const v1::Config& config, const std::string& authorization,
                         const std::string& x_api_key, std::string* key_name) {
  std::string key = x_api_key;
  if (key.empty()) {
    absl::string_view auth = authorization;
    if (!absl::StartsWithIgnoreCase(auth, "apikey ")) {
      return absl::UnauthenticatedError("missing API key: send 'authorization: apikey KEY'");
    }
    key = std::string(absl::StripAsciiWhitespace(auth.substr(7)));
  }
  int match = -1;
  for (int i = 0; i < config.api_keys_size(); ++i) {
    if (ConstantTimeEquals(config.api_keys(i), key) && match < 0) match = i;
  }
  if (match < 0) return absl::UnauthenticatedError("invalid API key");
  if (key_name != nullptr) {
    *key_name = match < config.api_key_names_size() ? config.api_key_names(match)
                                                    : absl::StrCat("api_keys[", match, "]");
  }
  return absl::OkStatus();
}

absl::Status ValidateUserConnections(const v1::Config& config, const v1::UserConnectionsRequest& r) {
  if (auto st = CheckApp(config, r.app_id()); !st.ok()) return st;
  if (auto st = CheckId("user_id", r.user_id()); !st.ok()) return st;
  if (r.page_size() > kMaxPageSize) {
    return absl::InvalidArgumentError(absl::StrCat("page_size is more than ", kMaxPageSize));
  }
  return PageCursor(r.page_token()).status();
}

absl::StatusOr<std::string> PageCursor(const std::string& page_token) {
  if (page_token.empty()) return std::string();
  std::string cursor;
  if (page_token.size() > 2 * kMaxIdLength || !absl::WebSafeBase64Unescape(page_token, &cursor) || cursor.empty() ||
      cursor.size() > kMaxIdLength) {
    return absl::InvalidArgumentError("page_token is not one this service gave out");
  }
  return cursor;
}

absl::Status ValidateTerminateUser(const v1::Config& config, const v1::TerminateUserRequest& r) {
  if (auto st = CheckApp(config, r.app_id()); !st.ok()) return st;
  if (auto st = CheckId("user_id", r.user_id()); !st.ok()) return st;
  if (r.except_client_ids_size() > kMaxExcept) {
    return absl::InvalidArgumentError(absl::StrCat("except_client_ids has more than ", kMaxExcept, " entries"));
  }
  if (r.ban_seconds() != 0) return absl::UnimplementedError("ban_seconds is not supported yet");
  return CheckClose(r.code(), r.reason());
}

absl::Status ValidateDisconnect(const v1::Config& config, const v1::DisconnectRequest& r) {
  if (auto st = CheckApp(config, r.app_id()); !st.ok()) return st;
  if (auto st = CheckId("client_id", r.client_id()); !st.ok()) return st;
  return CheckClose(r.code(), r.reason());
}

namespace {

// The event name and the payload as JSON text, checked.
absl::Status CheckMessage(const v1::Config& config, const std::string& event, const google::protobuf::Value& data,
                          std::string* json) {
  if (event.empty() || event.size() > 200) return absl::InvalidArgumentError("event must be 1 to 200 bytes");
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  if (data.kind_case() == google::protobuf::Value::KIND_NOT_SET) {
    *json = "null";
  } else if (!google::protobuf::util::MessageToJsonString(data, json, opts).ok()) {
    return absl::InvalidArgumentError("data cannot be written as JSON (a number that is not finite?)");
  }
  const uint32_t limit = config.control().max_send_bytes();
  if (json->size() > limit) {
    return absl::InvalidArgumentError(
        absl::StrCat("data is ", json->size(), " bytes as JSON; at most ", limit, " (control.max_send_bytes)"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<v1::BusRequest> SendToUserRequest(const v1::Config& config, const v1::SendToUserRequest& r) {
  if (auto st = CheckApp(config, r.app_id()); !st.ok()) return st;
  if (auto st = CheckId("user_id", r.user_id()); !st.ok()) return st;
  if (r.except_client_ids_size() > kMaxExcept) {
    return absl::InvalidArgumentError(absl::StrCat("except_client_ids has more than ", kMaxExcept, " entries"));
  }
  v1::BusRequest req;
  auto* s = req.mutable_send();
  if (auto st = CheckMessage(config, r.event(), r.data(), s->mutable_data_json()); !st.ok()) return st;
  s->set_app_id(r.app_id());
  s->set_user_id(r.user_id());
  s->set_event(r.event());
  *s->mutable_except_client_ids() = r.except_client_ids();
  return req;
}

absl::StatusOr<v1::BusRequest> SendToClientRequest(const v1::Config& config, const v1::SendToClientRequest& r) {
  if (auto st = CheckApp(config, r.app_id()); !st.ok()) return st;
  if (auto st = CheckId("client_id", r.client_id()); !st.ok()) return st;
  v1::BusRequest req;
  auto* s = req.mutable_send();
  if (auto st = CheckMessage(config, r.event(), r.data(), s->mutable_data_json()); !st.ok()) return st;
  s->set_app_id(r.app_id());
  s->set_only_client_id(r.client_id());
  s->set_event(r.event());
  return req;
}

void FillSendToUser(const GatherResult& g, v1::SendToUserResponse* out) {
  uint32_t total = 0;
  for (const auto& [gw, reply] : g.answers) {
    (*out->mutable_delivered_per_gateway())[gw] = reply.delivered();
    total += reply.delivered();
    for (const auto& [why, n] : reply.not_delivered()) (*out->mutable_not_delivered())[why] += n;
  }
  out->set_delivered(total);
  FillCoverage(g, out->mutable_coverage());
}

uint32_t Delivered(const GatherResult& g) {
  uint32_t n = 0;
  for (const auto& [gw, reply] : g.answers) n += reply.delivered();
  return n;
}

void MergeCoverage(const std::vector<GatherResult>& all, v1::Coverage* out) {
  std::set<std::string> asked, answered, missing;
  bool complete = true;
  std::string reason;
  for (const auto& g : all) {
    v1::Coverage one;
    FillCoverage(g, &one);
    complete = complete && one.complete();
    if (reason.empty()) reason = one.incomplete_reason();
    asked.insert(one.gateways_asked().begin(), one.gateways_asked().end());
    answered.insert(one.gateways_answered().begin(), one.gateways_answered().end());
    missing.insert(one.gateways_missing().begin(), one.gateways_missing().end());
    out->mutable_missing_reasons()->insert(one.missing_reasons().begin(), one.missing_reasons().end());
  }
  out->set_complete(complete);
  if (!complete) out->set_incomplete_reason(reason);
  for (const auto& id : asked) out->add_gateways_asked(id);
  for (const auto& id : answered) out->add_gateways_answered(id);
  for (const auto& id : missing) out->add_gateways_missing(id);
}

namespace {

constexpr char kServerToUser[] = "#server-to-user-";

// Pusher's `data` (a string) as the payload's JSON text: itself when it is
// JSON (an object the SDK encoded, usually; `verbatim` is then set: Pusher
// clients get the text as it came, a JSON string literal with its quotes),
// else as a JSON string.
absl::StatusOr<std::string> PusherDataJson(const v1::Config& config, const std::string& data, bool* verbatim) {
  const uint32_t limit = config.control().max_send_bytes();
  *verbatim = false;
  if (data.size() > limit) {
    return absl::InvalidArgumentError(
        absl::StrCat("data is ", data.size(), " bytes; at most ", limit, " (control.max_send_bytes)"));
  }
  if (JsonDepthWithin(data) && nlohmann::json::accept(data)) {
    *verbatim = true;
    return data;
  }
  std::string quoted = nlohmann::json(data).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (quoted.size() > limit) return absl::InvalidArgumentError("data is too large once quoted (control.max_send_bytes)");
  return quoted;
}

absl::StatusOr<v1::BusRequest> PusherEvent(const v1::Config& config, const std::string& app_id,
                                          const std::string& channel, const std::string& name,
                                          const std::string& data, const std::string& socket_id) {
  if (name.empty() || name.size() > 200) return absl::InvalidArgumentError("name must be 1 to 200 bytes");
  if (!absl::StartsWith(channel, kServerToUser) || channel.size() == sizeof(kServerToUser) - 1) {
    return absl::InvalidArgumentError("channel \"" + channel.substr(0, 200) +
                                      "\": only #server-to-user-<user id> channels are served (sendToUser)");
  }
  if (!socket_id.empty() && !std::regex_match(socket_id, std::regex("[0-9]{1,20}\\.[0-9]{1,20}"))) {
    return absl::InvalidArgumentError("socket_id \"" + socket_id.substr(0, 64) + "\" is not a socket ID");
  }
  const std::string user = channel.substr(sizeof(kServerToUser) - 1);
  if (auto st = CheckId("user id in channel", user); !st.ok()) return st;
  bool verbatim = false;
  auto data_json = PusherDataJson(config, data, &verbatim);
  if (!data_json.ok()) return data_json.status();
  v1::BusRequest req;
  auto* s = req.mutable_send();
  s->set_app_id(app_id);
  s->set_user_id(user);
  s->set_event(name);
  s->set_data_json(*std::move(data_json));
  s->set_pusher_text_verbatim(verbatim);
  if (!socket_id.empty()) s->add_except_client_ids(socket_id);
  return req;
}

}  // namespace

absl::StatusOr<std::vector<v1::BusRequest>> PusherTriggerRequests(const v1::Config& config,
                                                                   const v1::PusherTriggerRequest& r) {
  if (auto st = CheckApp(config, r.app_id()); !st.ok()) return st;
  std::vector<std::string> channels(r.channels().begin(), r.channels().end());
  if (!r.channel().empty()) channels.push_back(r.channel());
  if (channels.empty()) return absl::InvalidArgumentError("channels must name at least one channel");
  if (channels.size() > 100) return absl::InvalidArgumentError("at most 100 channels per event");
  std::vector<v1::BusRequest> out;
  for (const auto& ch : channels) {
    auto req = PusherEvent(config, r.app_id(), ch, r.name(), r.data(), r.socket_id());
    if (!req.ok()) return req.status();
    out.push_back(*std::move(req));
  }
  return out;
}

absl::StatusOr<std::vector<v1::BusRequest>> PusherBatchRequests(const v1::Config& config,
                                                                 const v1::PusherTriggerBatchRequest& r) {
  if (auto st = CheckApp(config, r.app_id()); !st.ok()) return st;
  if (r.batch_size() == 0) return absl::InvalidArgumentError("batch must hold at least one event");
  if (r.batch_size() > 10) return absl::InvalidArgumentError("at most 10 events per batch");
  std::vector<v1::BusRequest> out;
  for (int i = 0; i < r.batch_size(); ++i) {
    const auto& e = r.batch(i);
    auto req = PusherEvent(config, r.app_id(), e.channel(), e.name(), e.data(), e.socket_id());
    if (!req.ok()) return absl::Status(req.status().code(), absl::StrCat("batch[", i, "]: ", req.status().message()));
    out.push_back(*std::move(req));
  }
  return out;
}

namespace {
// A personal channel's send (NOT_FOUND for any other channel: Centrifugo's
// "unknown channel").
absl::StatusOr<v1::BusRequest> PersonalChannelSend(const v1::Config& config, const std::string& channel,
                                                   const google::protobuf::Value& data) {
  const std::string prefix = PersonalChannel(FindApp(config, config.default_app()), "");
  if (channel.size() <= prefix.size() || channel.compare(0, prefix.size(), prefix) != 0) {
    return absl::NotFoundError("unknown channel \"" + channel.substr(0, 200) + "\": only personal channels (" + prefix +
                               "<user id>) are served");
  }
  v1::SendToUserRequest one;
  one.set_app_id(config.default_app());
  one.set_user_id(channel.substr(prefix.size()));
  one.set_event("publication");
  *one.mutable_data() = data;
  return SendToUserRequest(config, one);
}
}  // namespace

absl::StatusOr<v1::BusRequest> CentrifugoPublishRequest(const v1::Config& config, const std::string& channel,
                                                        const google::protobuf::Value& data,
                                                        const std::string& b64data) {
  if (!b64data.empty()) return absl::InvalidArgumentError("b64data is not supported: send data as JSON");
  if (channel.empty()) return absl::InvalidArgumentError("channel is required");
  return PersonalChannelSend(config, channel, data);
}

absl::StatusOr<std::vector<CentrifugoChannelRequest>> CentrifugoBroadcastRequests(
    const v1::Config& config, const std::vector<std::string>& channels, const google::protobuf::Value& data,
    const std::string& b64data) {
  if (!b64data.empty()) return absl::InvalidArgumentError("b64data is not supported: send data as JSON");
  if (channels.empty()) return absl::InvalidArgumentError("channels are required");
  if (channels.size() > 1000) return absl::InvalidArgumentError("at most 1000 channels");
  std::vector<CentrifugoChannelRequest> out(channels.size());
  for (size_t i = 0; i < channels.size(); ++i) {
    auto req = channels[i].empty() ? absl::InvalidArgumentError("channel can not be blank in broadcast")
                                   : PersonalChannelSend(config, channels[i], data);
    if (req.ok()) {
      out[i].request = *std::move(req);
      continue;
    }
    out[i].error.set_code(absl::IsNotFound(req.status()) ? 102 : 107);
    out[i].error.set_message(std::string(req.status().message()));
  }
  return out;
}

void FillSendToClient(const GatherResult& g, v1::SendToClientResponse* out) {
  for (const auto& [gw, reply] : g.answers) {
    if (reply.delivered() > 0) {
      out->set_found(true);
      out->set_gateway(gw);
      out->set_delivered(true);
    } else if (!reply.not_delivered().empty()) {
      out->set_found(true);
      out->set_gateway(gw);
      out->set_not_delivered_reason(reply.not_delivered().begin()->first);
    }
  }
  FillCoverage(g, out->mutable_coverage());
}

void FillUserConnections(const GatherResult& g, v1::UserConnectionsResponse* out, uint32_t page_size,
                         const std::string& after) {
  auto* result = out->mutable_result();
  // A page: the first page_size client IDs after the cursor over every
  // gateway's answer (each sent at most page_size + 1 of its own, so the
  // page's and the next one's first are among them).
  std::set<std::string_view> page;
  if (page_size > 0 || !after.empty()) {
    std::vector<std::string_view> ids;
    for (const auto& [gw, reply] : g.answers) {
      for (const auto& s : reply.sessions()) {
        if (s.client_id() > after) ids.push_back(s.client_id());
      }
    }
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    if (page_size > 0 && ids.size() > page_size) {
      ids.resize(page_size);
      result->set_next_page_token(absl::WebSafeBase64Escape(absl::string_view(ids.back().data(), ids.back().size())));
    }
    page.insert(ids.begin(), ids.end());
  }
  result->set_complete(g.complete);
  result->set_incomplete_reason(g.incomplete_reason);
  for (const auto& id : g.asked) result->add_gateways_asked(id);
  for (const auto& id : g.missing) result->add_gateways_missing(id);
  result->mutable_missing_reasons()->insert(g.missing_reasons.begin(), g.missing_reasons.end());
  for (const auto& [gw, reply] : g.answers) {
    result->add_gateways_answered(gw);
    for (const auto& s : reply.sessions()) {
      if ((page_size > 0 || !after.empty()) && page.count(s.client_id()) == 0) continue;
      v1::ConnectionInfo& info = (*result->mutable_connections())[s.client_id()];
      info.set_app_name(s.app_name());
      info.set_app_version(s.app_version());
      info.set_transport(s.transport());
      info.set_protocol(s.protocol());
      info.set_user(s.user_id());
      info.set_gateway(gw);
      info.set_remote_addr(s.remote_addr());
      *info.mutable_connected_at() = google::protobuf::util::TimeUtil::MillisecondsToTimestamp(s.connected_at_ms());
      if (!s.meta_json().empty()) {
        // The gateway stored what the token carried; if it is somehow not
        // JSON, hand it back as a string rather than dropping it.
        if (!google::protobuf::util::JsonStringToMessage(s.meta_json(), info.mutable_meta()).ok()) {
          info.mutable_meta()->set_string_value(s.meta_json());
        }
      }
    }
  }
}

void FillTerminateUser(const GatherResult& g, v1::TerminateUserResponse* out) {
  uint32_t total = 0;
  for (const auto& [gw, reply] : g.answers) {
    (*out->mutable_closed_per_gateway())[gw] = reply.closed();
    total += reply.closed();
  }
  out->set_closed(total);
  FillCoverage(g, out->mutable_coverage());
}

void FillDisconnect(const GatherResult& g, v1::DisconnectResponse* out) {
  for (const auto& [gw, reply] : g.answers) {
    if (reply.closed() > 0) {
      out->set_found(true);
      out->set_gateway(gw);
    }
  }
  FillCoverage(g, out->mutable_coverage());
}

}  // namespace switchboard::control
