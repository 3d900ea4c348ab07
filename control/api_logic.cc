#include "control/api_logic.h"

#include <algorithm>
#include <set>
#include <string_view>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/config.h"
#include "common/crypto.h"
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
