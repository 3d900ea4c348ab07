#include "common/config.h"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/reflection.h"
#include "yaml-cpp/yaml.h"

namespace switchboard {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

absl::StatusOr<std::string> ExpandEnv(const std::string& in, const std::string& path) {
  std::string out;
  size_t i = 0;
  while (i < in.size()) {
    if (in[i] == '$' && i + 1 < in.size() && in[i + 1] == '{') {
      size_t end = in.find('}', i);
      if (end == std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": unterminated ${ in value"));
      }
      std::string expr = in.substr(i + 2, end - i - 2);
      std::string name = expr, fallback;
      bool has_default = false;
      if (size_t d = expr.find(":-"); d != std::string::npos) {
        name = expr.substr(0, d);
        fallback = expr.substr(d + 2);
        has_default = true;
      }
      const char* v = std::getenv(name.c_str());
      if (v != nullptr && *v != '\0') {
        out += v;
      } else if (has_default) {
        out += fallback;
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": environment variable ", name, " is not set"));
      }
      i = end + 1;
    } else {
      out += in[i++];
    }
  }
  return out;
}

absl::Status SetScalar(Message& msg, const FieldDescriptor* f, const YAML::Node& node,
                       const std::string& path) {
  if (!node.IsScalar()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": expected a scalar value"));
  }
  auto text_or = ExpandEnv(node.Scalar(), path);
  if (!text_or.ok()) return text_or.status();
  const std::string& text = *text_or;
  const auto* refl = msg.GetReflection();
  bool repeated = f->is_repeated();
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_STRING:
      repeated ? refl->AddString(&msg, f, text) : refl->SetString(&msg, f, text);
      return absl::OkStatus();
    case FieldDescriptor::CPPTYPE_UINT32: {
      uint32_t v;
      if (!absl::SimpleAtoi(text, &v)) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": expected a non-negative integer, got \"", text, "\""));
      }
      repeated ? refl->AddUInt32(&msg, f, v) : refl->SetUInt32(&msg, f, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_INT32: {
      int32_t v;
      if (!absl::SimpleAtoi(text, &v)) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": expected an integer, got \"", text, "\""));
      }
      repeated ? refl->AddInt32(&msg, f, v) : refl->SetInt32(&msg, f, v);
      return absl::OkStatus();
    }
    case FieldDescriptor::CPPTYPE_BOOL: {
      bool v;
      if (!absl::SimpleAtob(text, &v)) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": expected true or false, got \"", text, "\""));
      }
      repeated ? refl->AddBool(&msg, f, v) : refl->SetBool(&msg, f, v);
      return absl::OkStatus();
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat(path, ": unsupported field type"));
  }
}

absl::Status FillMessage(Message& msg, const YAML::Node& node, const std::string& path) {
  if (!node.IsMap()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.empty() ? "config" : path, ": expected a mapping"));
  }
  const auto* desc = msg.GetDescriptor();
  const auto* refl = msg.GetReflection();
  // YAML leaves a repeated key to the reader; taking the last (or the first)
  // one silently hides a mistake, often in a secret: refused.
  std::set<const FieldDescriptor*> seen;
  for (const auto& kv : node) {
    std::string key = kv.first.as<std::string>();
    std::string field_path = path.empty() ? key : absl::StrCat(path, ".", key);
    const FieldDescriptor* f = desc->FindFieldByName(key);
    if (f == nullptr) f = desc->FindFieldByCamelcaseName(key);
    if (f == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(field_path, ": unknown field"));
    }
    if (!seen.insert(f).second) {
      return absl::InvalidArgumentError(absl::StrCat(field_path, ": given more than once"));
    }
    const YAML::Node& value = kv.second;
    if (value.IsNull()) continue;
    if (f->is_repeated()) {
      if (!value.IsSequence()) {
        return absl::InvalidArgumentError(absl::StrCat(field_path, ": expected a list"));
      }
      for (size_t i = 0; i < value.size(); ++i) {
        std::string item_path = absl::StrCat(field_path, "[", i, "]");
        if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
          auto st = FillMessage(*refl->AddMessage(&msg, f), value[i], item_path);
          if (!st.ok()) return st;
        } else {
          auto st = SetScalar(msg, f, value[i], item_path);
          if (!st.ok()) return st;
        }
      }
    } else if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      auto st = FillMessage(*refl->MutableMessage(&msg, f), value, field_path);
      if (!st.ok()) return st;
    } else {
      auto st = SetScalar(msg, f, value, field_path);
      if (!st.ok()) return st;
    }
  }
  return absl::OkStatus();
}

absl::Status Bad(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

bool ValidHostPort(const std::string& s) {
  size_t colon = s.rfind(':');
  uint32_t port;
  return colon != std::string::npos && colon > 0 &&
         absl::SimpleAtoi(s.substr(colon + 1), &port) && port <= 65535;
}

}  // namespace

absl::StatusOr<v1::Config> ParseConfig(const std::string& text) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("config: not valid YAML: ", e.what()));
  }
  v1::Config config;
  absl::Status st;
  try {
    st = FillMessage(config, root, "");
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("config: ", e.what()));
  }
  if (!st.ok()) return st;
  return config;
}

absl::Status ValidateConfig(v1::Config& c, ConfigRole role) {
  if (c.cluster().empty()) return Bad("cluster", "must not be empty");
  for (char ch : c.cluster()) {
    if (!(isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_')) {
      return Bad("cluster", "only letters, digits, '-' and '_' are allowed (it prefixes NATS subjects)");
    }
  }
  if (c.nats_url().empty()) return Bad("nats_url", "must not be empty");
  if (c.apps().empty()) return Bad("apps", "at least one app is required");
  std::set<std::string> ids, keys;
  for (int i = 0; i < c.apps_size(); ++i) {
    const auto& app = c.apps(i);
    std::string p = absl::StrCat("apps[", i, "]");
    if (app.id().empty()) return Bad(p + ".id", "must not be empty");
    if (app.id().size() > 128) return Bad(p + ".id", "longer than 128 characters");
    if (!ids.insert(app.id()).second) return Bad(p + ".id", "duplicate app id \"" + app.id() + "\"");
    if (app.key().empty()) return Bad(p + ".key", "must not be empty");
    if (!keys.insert(app.key()).second) return Bad(p + ".key", "duplicate app key");
    if (app.secret().size() < 8) return Bad(p + ".secret", "must be at least 8 characters");
    const std::string& ns = app.personal_channel_namespace();
    if (ns.size() > 64 || !std::all_of(ns.begin(), ns.end(), [](char ch) {
          return absl::ascii_isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-';
        })) {
      return Bad(p + ".personal_channel_namespace", "at most 64 letters, digits, '_' or '-'");
    }
  }
  if (c.default_app().empty()) c.set_default_app(c.apps(0).id());
  if (ids.count(c.default_app()) == 0) return Bad("default_app", "names no app in apps");
  if (role == ConfigRole::kGateway) c.clear_api_keys();
  if (role != ConfigRole::kGateway && c.api_keys().empty()) return Bad("api_keys", "at least one API key is required");
  if (role == ConfigRole::kGateway) c.clear_api_key_names();
  if (c.api_key_names_size() > c.api_keys_size()) {
    return Bad("api_key_names", "names more keys than api_keys has");
  }
  for (int i = 0; i < c.api_key_names_size(); ++i) {
    const std::string& n = c.api_key_names(i);
    if (n.empty() || n.size() > 64 ||
        !std::all_of(n.begin(), n.end(), [](char ch) { return absl::ascii_isalnum(ch) || ch == '.' || ch == '_' || ch == '-'; })) {
      return Bad(absl::StrCat("api_key_names[", i, "]"), "must be 1 to 64 letters, digits, '.', '_' or '-'");
    }
  }
  for (int i = 0; i < c.api_keys_size(); ++i) {
    if (c.api_keys(i).size() < 8) return Bad(absl::StrCat("api_keys[", i, "]"), "must be at least 8 characters");
  }

  auto* control = c.mutable_control();
  if (control->listen().empty()) control->set_listen("127.0.0.1:50051");
  if (!ValidHostPort(control->listen())) return Bad("control.listen", "expected host:port");
  if (control->addresses().empty()) control->add_addresses(control->listen());
  if (!control->health_listen().empty() && !ValidHostPort(control->health_listen())) {
    return Bad("control.health_listen", "expected host:port");
  }
  for (int i = 0; i < control->addresses_size(); ++i) {
    if (!ValidHostPort(control->addresses(i))) {
      return Bad(absl::StrCat("control.addresses[", i, "]"), "expected host:port");
    }
  }
  if (control->heartbeat_interval_ms() == 0) control->set_heartbeat_interval_ms(1000);
  if (control->lease_ms() == 0) control->set_lease_ms(3000);
  if (control->heartbeat_interval_ms() < 100) return Bad("control.heartbeat_interval_ms", "at least 100");
  if (control->lease_ms() < 2 * control->heartbeat_interval_ms()) {
    return Bad("control.lease_ms", "must be at least twice control.heartbeat_interval_ms");
  }
  if (control->default_timeout_ms() == 0) control->set_default_timeout_ms(1000);
  if (control->max_timeout_ms() == 0) control->set_max_timeout_ms(10000);
  if (control->resolve_interval_ms() == 0) control->set_resolve_interval_ms(5000);
  if (!control->dns_server().empty() && !ValidHostPort(control->dns_server())) {
    return Bad("control.dns_server", "expected ip:port");
  }
  if (control->max_in_flight() == 0) control->set_max_in_flight(10000);
  if (!control->has_bus_busy_poll_us()) control->set_bus_busy_poll_us(150);
  if (control->bus_busy_poll_us() > 1000) return Bad("control.bus_busy_poll_us", "at most 1000");
  if (control->shutdown_delay_ms() > 60000) return Bad("control.shutdown_delay_ms", "at most 60000");
  if (control->max_send_bytes() == 0) control->set_max_send_bytes(65536);
  if (control->max_send_bytes() > 1048576) return Bad("control.max_send_bytes", "at most 1048576");
  if (control->max_timeout_ms() < control->default_timeout_ms()) {
    return Bad("control.max_timeout_ms", "must be at least control.default_timeout_ms");
  }
  if (control->default_timeout_ms() > 60000) return Bad("control.default_timeout_ms", "at most 60000");

  auto* gw = c.mutable_gateway();
  if (gw->listen_host().empty()) gw->set_listen_host("127.0.0.1");
  if (gw->port() > 65535) return Bad("gateway.port", "at most 65535");
  if (gw->ping_interval_s() == 0) gw->set_ping_interval_s(25);
  if (gw->pong_timeout_s() == 0) gw->set_pong_timeout_s(8);
  if (gw->pong_timeout_s() >= gw->ping_interval_s() + 10) {
    return Bad("gateway.pong_timeout_s", "must be shorter than ping_interval_s + 10");
  }
  if (gw->connect_timeout_ms() == 0) gw->set_connect_timeout_ms(10000);
  if (gw->max_message_bytes() == 0) gw->set_max_message_bytes(65536);
  if (gw->max_message_bytes() < 1024 || gw->max_message_bytes() > (16u << 20)) {
    return Bad("gateway.max_message_bytes", "must be between 1024 and 16777216");
  }
  if (gw->max_session_bytes() == 0) gw->set_max_session_bytes(kDefaultMaxSessionBytes);
  if (gw->max_session_bytes() > (256u << 10)) {
    return Bad("gateway.max_session_bytes", "at most 262144 (a session's record must fit the bus and the Attach stream)");
  }
  // Every session is a descriptor: the gateway fits this under its process's
  // descriptor limit at start (RLIMIT_NOFILE, raised to the hard limit), so
  // the config may ask for as many as the machines it runs on allow.
  if (gw->max_sessions() == 0) gw->set_max_sessions(18000);
  if (gw->max_sessions() > 10'000'000) return Bad("gateway.max_sessions", "at most 10000000");
  if (gw->outbox_limit() == 0) gw->set_outbox_limit(256);
  if (gw->unready_at_percent() == 0) gw->set_unready_at_percent(95);
  if (gw->ready_again_at_percent() == 0) gw->set_ready_again_at_percent(std::min(90u, gw->unready_at_percent()));
  if (gw->unready_at_percent() > 100) return Bad("gateway.unready_at_percent", "at most 100");
  if (gw->ready_again_at_percent() > gw->unready_at_percent()) {
    return Bad("gateway.ready_again_at_percent", "must be at most gateway.unready_at_percent");
  }
  if (!gw->has_client_expired_close_delay_s()) gw->set_client_expired_close_delay_s(25);
  if (gw->pusher_signin_timeout_s() == 0) gw->set_pusher_signin_timeout_s(30);
  if (gw->max_unsigned() == 0) gw->set_max_unsigned(std::max<uint32_t>(100, gw->max_sessions() / 10));
  if (c.cluster_token().size() < 16) {
    return Bad("cluster_token", "at least 16 characters are required (gateways present it to control)");
  }
  if (role == ConfigRole::kGateway) c.mutable_nats_control()->clear_password();
  if (role == ConfigRole::kControl) c.mutable_nats_gateway()->clear_password();
  for (const auto& [name, creds, needed] :
       {std::tuple<const char*, const v1::NatsCredentials*, bool>{"nats_gateway", &c.nats_gateway(),
                                                                  role != ConfigRole::kControl},
        {"nats_control", &c.nats_control(), role != ConfigRole::kGateway}}) {
    if (creds->user().empty()) return Bad(std::string(name) + ".user", "must not be empty (NATS runs with authentication)");
    if (needed && creds->password().size() < 12) return Bad(std::string(name) + ".password", "at least 12 characters");
  }
  {
    const auto& tls = c.tls();
    const bool any = !tls.ca_file().empty() || !tls.cert_file().empty() || !tls.key_file().empty();
    if (any) {
      for (const auto& [field, path] : {std::pair<const char*, const std::string*>{"tls.ca_file", &tls.ca_file()},
                                        {"tls.cert_file", &tls.cert_file()},
                                        {"tls.key_file", &tls.key_file()}}) {
        if (path->empty()) return Bad(field, "must be set when any tls file is (ca_file, cert_file, key_file)");
        if (!std::ifstream(*path)) return Bad(field, "cannot read " + *path);
      }
    }
    if (absl::StartsWith(c.nats_url(), "tls://") && tls.ca_file().empty()) {
      return Bad("tls.ca_file", "a tls:// nats_url needs the CA to verify the server");
    }
  }
  if (c.nats_gateway().user() == c.nats_control().user()) {
    return Bad("nats_control.user", "must differ from nats_gateway.user (each role has its own permissions)");
  }
  if (role == ConfigRole::kGateway) c.clear_http_proxy_token();
  if (role != ConfigRole::kGateway && c.http_proxy_token().size() < 16) {
    return Bad("http_proxy_token", "at least 16 characters are required (switchboard-http presents it to control)");
  }
  if (gw->tls_cert_file().empty() != gw->tls_key_file().empty()) {
    return Bad(gw->tls_cert_file().empty() ? "gateway.tls_cert_file" : "gateway.tls_key_file",
               "gateway.tls_cert_file and gateway.tls_key_file go together");
  }
  for (const auto& [field, path] : {std::pair<const char*, const std::string*>{"gateway.tls_cert_file", &gw->tls_cert_file()},
                                    {"gateway.tls_key_file", &gw->tls_key_file()}}) {
    if (!path->empty() && !std::ifstream(*path)) return Bad(field, "cannot read " + *path);
  }
  if (gw->proxy_protocol() && gw->trusted_proxies().empty()) {
    return Bad("gateway.proxy_protocol", "needs gateway.trusted_proxies (whose PROXY headers to believe)");
  }
  if (!gw->operator_listen().empty() && !ValidHostPort(gw->operator_listen())) {
    return Bad("gateway.operator_listen", "expected host:port");
  }
  if (gw->client_expired_close_delay_s() > 3600) return Bad("gateway.client_expired_close_delay_s", "at most 3600");
  return absl::OkStatus();
}

bool IsPlaceholderSecret(const std::string& value) {
  // Whole words only ("exchange-mechanism" is no placeholder).
  const std::string v = absl::AsciiStrToLower(value);
  for (const std::string marker : {"change-me", "changeme", "change_me", "replace-with", "replace-me", "replace_me"}) {
    for (size_t at = v.find(marker); at != std::string::npos; at = v.find(marker, at + 1)) {
      const size_t end = at + marker.size();
      if ((at == 0 || !absl::ascii_isalnum(static_cast<unsigned char>(v[at - 1]))) &&
          (end == v.size() || !absl::ascii_isalnum(static_cast<unsigned char>(v[end])))) {
        return true;
      }
    }
  }
  return false;
}

absl::Status RefusePlaceholderSecrets(const v1::Config& c) {
  std::vector<std::pair<std::string, const std::string*>> secrets;
  for (int i = 0; i < c.apps_size(); ++i) secrets.emplace_back(absl::StrCat("apps[", i, "].secret"), &c.apps(i).secret());
  for (int i = 0; i < c.api_keys_size(); ++i) secrets.emplace_back(absl::StrCat("api_keys[", i, "]"), &c.api_keys(i));
  secrets.emplace_back("cluster_token", &c.cluster_token());
  secrets.emplace_back("http_proxy_token", &c.http_proxy_token());
  secrets.emplace_back("nats_gateway.password", &c.nats_gateway().password());
  secrets.emplace_back("nats_control.password", &c.nats_control().password());
  for (const auto& [field, value] : secrets) {
    if (IsPlaceholderSecret(*value)) {
      return absl::FailedPreconditionError(absl::StrCat(
          field, ": a placeholder published with Switchboard, refused outside dev mode: generate a real one "
                 "(openssl rand -hex 32), or start with --dev (SWITCHBOARD_DEV=1) for a local try-out"));
    }
  }
  return absl::OkStatus();
}

bool DevMode(bool dev_flag) {
  const char* env = std::getenv("SWITCHBOARD_DEV");
  return dev_flag || (env != nullptr && std::string(env) == "1");
}

absl::StatusOr<v1::Config> LoadConfig(const std::string& path, ConfigRole role) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("config: cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  auto config = ParseConfig(ss.str());
  if (!config.ok()) return config.status();
  auto st = ValidateConfig(*config, role);
  if (!st.ok()) return st;
  return config;
}

const v1::AppConfig* FindApp(const v1::Config& config, const std::string& app_id) {
  for (const auto& app : config.apps()) {
    if (app.id() == app_id) return &app;
  }
  return nullptr;
}

std::string GatewaysSubject(const std::string& cluster) { return "switchboard." + cluster + ".gateways"; }

std::string RepliesSubjectPrefix(const std::string& cluster) { return "switchboard." + cluster + ".replies"; }

std::string PresenceSubject(const std::string& cluster) { return "switchboard." + cluster + ".presence"; }
std::string CommandsSubject(const std::string& cluster) { return "switchboard." + cluster + ".commands"; }

std::string PersonalChannel(const v1::AppConfig* app, const std::string& user_id) {
  if (app == nullptr || app->personal_channel_namespace().empty()) return "#" + user_id;
  return app->personal_channel_namespace() + ":#" + user_id;
}

}  // namespace switchboard
