// switchboardctl: operator CLI. Output is JSON on stdout; errors on stderr
// with a non-zero exit code.
#include <jwt.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <memory>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/status/status.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/cli_help.h"
#include "common/config.h"
#include "common/grpc_tls.h"
#include "common/crypto.h"
#include "control/pusher_auth.h"
#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"
#include "switchboard/v1/control.grpc.pb.h"

ABSL_FLAG(std::string, config, "",
          "config file (app secrets, control address, API key); default: $SWITCHBOARD_CONFIG, else "
          "./switchboard.yaml, else ./config/switchboard.yaml");
ABSL_FLAG(std::string, control, "", "control address host:port (default: first control.addresses)");
ABSL_FLAG(std::string, api_key, "", "API key (default: $SWITCHBOARD_API_KEY, else the first in config)");
ABSL_FLAG(std::string, app, "", "app ID (default: config default_app)");
ABSL_FLAG(std::string, user, "", "user ID");
ABSL_FLAG(std::string, client, "", "client (connection) ID, for disconnect and send");
ABSL_FLAG(std::string, except, "", "comma-separated client IDs that terminate keeps");
ABSL_FLAG(int, code, 0, "close code (0: server default)");
ABSL_FLAG(std::string, event, "", "send: the event name");
ABSL_FLAG(std::string, data, "null", "send: the payload, any JSON value");
ABSL_FLAG(std::string, reason, "", "close reason");
ABSL_FLAG(std::string, info, "", "gentoken: JSON for the info claim");
ABSL_FLAG(std::string, meta, "", "gentoken: JSON for the meta claim (server-side only)");
ABSL_FLAG(int, ttl, 3600, "gentoken: seconds until exp (0: no exp)");
ABSL_FLAG(std::string, aud, "", "gentoken: aud claim (default: the app's audience, if configured)");
ABSL_FLAG(std::string, iss, "", "gentoken: iss claim (default: the app's issuer, if configured)");
ABSL_FLAG(bool, raw, false, "gentoken: print only the token, not JSON");
ABSL_FLAG(int, timeout_ms, 2000, "call deadline");
ABSL_FLAG(std::string, method, "POST", "sign: HTTP method");
ABSL_FLAG(int, page_size, 0, "connections: ask in pages of this many (0: one answer) and print them all");
ABSL_FLAG(std::string, path, "", "sign: request path, e.g. /apps/demo/users/42/terminate_connections");
ABSL_FLAG(std::string, body, "", "sign: the exact request body (POST: {} if empty)");
ABSL_FLAG(int, repeat, 1, "connections, gateways, send: call N times and print latency percentiles");
ABSL_FLAG(int, pause_us, 0,
          "with --repeat: idle time before each call, not counted (a paced caller instead of a tight "
          "loop)");
ABSL_FLAG(bool, users_from_stdin, false,
          "terminate: one user ID per line from stdin, each terminated when its line arrives; prints a JSON "
          "line per call with its wall-clock start (t0_us) and duration (for benchmarks)");

namespace {

using namespace switchboard;

int Fail(const std::string& msg, int code = 1) {
  std::fprintf(stderr, "switchboardctl: %s\n", msg.c_str());
  return code;
}

void PrintJson(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  opts.add_whitespace = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, opts);
  std::printf("%s", out.c_str());
}

int GenToken(const v1::Config& config, const std::string& app_id) {
  const v1::AppConfig* app = FindApp(config, app_id);
  if (app == nullptr) return Fail("unknown app " + app_id, 2);
  jwt_t* jwt = nullptr;
  if (jwt_new(&jwt) != 0) return Fail("jwt_new failed");
  std::unique_ptr<jwt_t, void (*)(jwt_t*)> guard(jwt, jwt_free);
  jwt_add_grant(jwt, "sub", absl::GetFlag(FLAGS_user).c_str());
  const long exp = absl::GetFlag(FLAGS_ttl) > 0 ? std::time(nullptr) + absl::GetFlag(FLAGS_ttl) : 0;
  if (exp > 0) jwt_add_grant_int(jwt, "exp", exp);
  const std::string aud = absl::GetFlag(FLAGS_aud).empty() ? app->audience() : absl::GetFlag(FLAGS_aud);
  const std::string iss = absl::GetFlag(FLAGS_iss).empty() ? app->issuer() : absl::GetFlag(FLAGS_iss);
  if (!aud.empty()) jwt_add_grant(jwt, "aud", aud.c_str());
  if (!iss.empty()) jwt_add_grant(jwt, "iss", iss.c_str());
  if (!absl::GetFlag(FLAGS_info).empty()) {
    std::string j = "{\"info\":" + absl::GetFlag(FLAGS_info) + "}";
    if (jwt_add_grants_json(jwt, j.c_str()) != 0) return Fail("--info is not valid JSON", 2);
  }
  if (!absl::GetFlag(FLAGS_meta).empty()) {
    std::string j = "{\"meta\":" + absl::GetFlag(FLAGS_meta) + "}";
    if (jwt_add_grants_json(jwt, j.c_str()) != 0) return Fail("--meta is not valid JSON", 2);
  }
  jwt_set_alg(jwt, JWT_ALG_HS256, reinterpret_cast<const unsigned char*>(app->secret().data()),
              static_cast<int>(app->secret().size()));
  char* token = jwt_encode_str(jwt);
  if (token == nullptr) return Fail("cannot encode token");
  std::string out(token);
  free(token);
  if (absl::GetFlag(FLAGS_raw)) {
    std::printf("%s\n", out.c_str());
    return 0;
  }
  nlohmann::json j = {{"token", out}, {"app", app->id()}, {"user", absl::GetFlag(FLAGS_user)}};
  if (exp > 0) j["exp"] = exp;
  std::printf("%s\n", j.dump(1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  return 0;
}

// Makes `call` (a unary RPC filling one response) `repeat` times and, when
// repeated, prints latency percentiles to stderr. Returns the last status.
grpc::Status TimedCalls(int repeat, const std::function<grpc::Status()>& call) {
  std::vector<double> ms;
  grpc::Status st;
  const auto pause = std::chrono::microseconds(std::max(0, absl::GetFlag(FLAGS_pause_us)));
  for (int i = 0; i < repeat; ++i) {
    if (pause.count() > 0) std::this_thread::sleep_for(pause);  // pacing, not a wait for anything
    auto t0 = std::chrono::steady_clock::now();
    st = call();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    if (!st.ok()) return st;
  }
  if (repeat > 1) {
    std::sort(ms.begin(), ms.end());
    std::fprintf(stderr, "calls=%d median_ms=%.3f p90_ms=%.3f p99_ms=%.3f\n", repeat, ms[ms.size() / 2],
                 ms[ms.size() * 9 / 10], ms[std::min(ms.size() - 1, ms.size() * 99 / 100)]);
  }
  return st;
}

// Prints the Pusher-style signed query string for one HTTP request.
int Sign(const v1::Config& config, const std::string& app_id) {
  const v1::AppConfig* app = FindApp(config, app_id);
  if (app == nullptr) return Fail("unknown app " + app_id, 2);
  const std::string method = absl::AsciiStrToUpper(absl::GetFlag(FLAGS_method));
  const std::string path = absl::GetFlag(FLAGS_path);
  if (path.empty() || path[0] != '/') return Fail("sign needs --path=/apps/...", 2);
  std::string body = absl::GetFlag(FLAGS_body);
  if (method != "GET" && body.empty()) body = "{}";
  std::string params = absl::StrCat("auth_key=", app->key(), "&auth_timestamp=", std::time(nullptr),
                                    "&auth_version=1.0");
  if (method != "GET") {
    params += "&body_md5=" + Md5Hex(body);
  }
  std::printf("%s&auth_signature=%s\n", params.c_str(),
              control::PusherSignature(app->secret(), method, path, params).c_str());
  return 0;
}

// nats-server's authorization block for this cluster: one user per role with
// the least it needs. Gateways: subscribe to the broadcast and commands
// subjects, publish only under the replies prefix and on the presence
// subject. Control: publish the broadcast and the commands, subscribe under
// the replies prefix and to presence. (Not allow_responses: nats-server keeps every
// reply subject it allowed for two minutes and, past 4,096 of them, scans
// them all on each request it delivers; at 35 calls/s and more that scan
// slowed every UserConnections call by half. Every gateway hears every
// request, so allow_responses let them answer any inbox anyway.)
int NatsConfig(const v1::Config& config) {
  using nlohmann::json;
  auto q = [](const std::string& s) { return json(s).dump(-1, ' ', false, json::error_handler_t::replace); };
  const std::string subject = q(GatewaysSubject(config.cluster())) + ", " + q(CommandsSubject(config.cluster()));
  const std::string replies = q(RepliesSubjectPrefix(config.cluster()) + ".>") + ", " +
                              q(PresenceSubject(config.cluster()));
  std::printf(
      "# nats-server authorization for Switchboard cluster %s (switchboardctl nats-config)\n"
      "authorization {\n"
      "  users = [\n"
      "    {user: %s, password: %s,\n"
      "     permissions: {subscribe: {allow: [%s]}, publish: {allow: [%s]}}}\n"
      "    {user: %s, password: %s,\n"
      "     permissions: {publish: {allow: [%s]}, subscribe: {allow: [%s]}}}\n"
      "  ]\n"
      "}\n",
      config.cluster().c_str(), q(config.nats_gateway().user()).c_str(), q(config.nats_gateway().password()).c_str(),
      subject.c_str(), replies.c_str(), q(config.nats_control().user()).c_str(),
      q(config.nats_control().password()).c_str(), subject.c_str(), replies.c_str());
  if (TlsEnabled(config)) {
    std::printf("tls {\n  cert_file: %s\n  key_file: %s\n}\n", q(config.tls().cert_file()).c_str(),
                q(config.tls().key_file()).c_str());
  }
  return 0;
}

// The commands, for the global and per-command help.
struct Command {
  const char* name;
  const char* summary;
  const char* usage;
  std::vector<const char*> flags;  // its own flags
  bool calls_control;              // also --control, --api_key, --timeout_ms
};

const std::vector<Command>& Commands() {
  static const std::vector<Command> kCommands = {
      {"connections", "every live connection of a user across the fleet (UserConnections), as JSON",
       "switchboardctl connections --user=U [--app=A] [--page_size=N]", {"user", "app", "page_size", "repeat", "pause_us"},
       true},
      {"terminate", "close a user's connections everywhere except the --except ones (TerminateUser)",
       "switchboardctl terminate --user=U [--except=ID,ID] [--code=C --reason=R]",
       {"user", "app", "except", "code", "reason", "users_from_stdin"}, true},
      {"disconnect", "close one connection (Disconnect)", "switchboardctl disconnect --client=ID [--code=C --reason=R]",
       {"client", "app", "code", "reason"}, true},
      {"send", "a message to every session of a user (SendToUser), or to one connection with --client (SendToClient)",
       "switchboardctl send --user=U --event=E [--data=JSON] [--except=ID,ID] | --client=ID --event=E [--data=JSON]",
       {"user", "client", "app", "event", "data", "except", "repeat"}, true},
      {"gateways", "the live fleet (ListGateways)", "switchboardctl gateways", {"repeat", "pause_us"}, true},
      {"gentoken", "a client connection token (HS256 JWT with the app's secret), as JSON or --raw",
       "switchboardctl gentoken --user=U [--app=A] [--info=JSON] [--meta=JSON] [--ttl=S] [--aud=A] [--iss=I] [--raw]",
       {"user", "app", "info", "meta", "ttl", "aud", "iss", "raw"}, false},
      {"sign", "the Pusher-style signed query string for one HTTP API request",
       "switchboardctl sign --path=P [--method=M] [--body=B] [--app=A]", {"path", "method", "body", "app"}, false},
      {"nats-config", "nats-server's authorization block (one user per role, least permissions) for the config",
       "switchboardctl nats-config", {}, false},
  };
  return kCommands;
}

const Command* FindCommand(const std::string& name) {
  for (const auto& c : Commands()) {
    if (name == c.name) return &c;
  }
  return nullptr;
}

constexpr char kConfigOrder[] =
    "Config: --config=FILE, else $SWITCHBOARD_CONFIG, else ./switchboard.yaml, else ./config/switchboard.yaml\n"
    "(the commands that call control run without one when --control and an API key are given).";

std::string GlobalUsage() {
  std::string out = "switchboardctl COMMAND [flags]: Switchboard's operator CLI (JSON on stdout; errors on stderr)\n\n";
  for (const auto& c : Commands()) out += absl::StrCat("  ", c.name, std::string(13 - strlen(c.name), ' '), c.summary, "\n");
  absl::StrAppend(&out, "\n", kConfigOrder, "\n`switchboardctl COMMAND --help` shows a command's flags.");
  return out;
}

int CommandHelp(const Command& c) {
  std::printf("switchboardctl %s: %s\n\nusage: %s\n\nflags:\n", c.name, c.summary, c.usage);
  std::vector<const char*> flags = c.flags;
  if (c.calls_control) {
    for (const char* f : {"control", "api_key", "timeout_ms"}) flags.push_back(f);
  }
  flags.push_back("config");
  for (const char* name : flags) {
    if (const absl::CommandLineFlag* f = absl::FindCommandLineFlag(name)) std::printf("%s", FlagHelpLine(*f).c_str());
  }
  std::printf("\n%s\n", kConfigOrder);
  return 0;
}

// Where the config is: the flag, the environment, then the working directory.
std::string FindConfig() {
  if (!absl::GetFlag(FLAGS_config).empty()) return absl::GetFlag(FLAGS_config);
  if (const char* env = std::getenv("SWITCHBOARD_CONFIG"); env != nullptr && *env != '\0') return env;
  for (const char* p : {"switchboard.yaml", "config/switchboard.yaml"}) {
    if (FILE* f = std::fopen(p, "r")) {
      std::fclose(f);
      return p;
    }
  }
  return "";
}

std::string StatusName(grpc::StatusCode code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

}  // namespace

int main(int argc, char** argv) {
  switchboard::SetFlagsUsage("switchboardctl", {"cli/switchboardctl.cc"});
  const std::string usage = GlobalUsage();
  absl::SetProgramUsageMessage(usage);
  // Help before abseil sees the flags: `switchboardctl CMD --help` and
  // `switchboardctl help [CMD]` show that command (exit 0); --help alone the
  // commands and every flag.
  {
    const Command* asked = nullptr;
    bool help = argc >= 2 && std::string(argv[1]) == "help";
    for (int i = 1; i < argc; ++i) {
      if (IsHelpArg(argv[i])) help = true;
      if (asked == nullptr && argv[i][0] != '-') asked = FindCommand(argv[i]);
    }
    if (help) {
      if (asked != nullptr) return CommandHelp(*asked);
      PrintProgramHelp({"cli/switchboardctl.cc"});
      return 0;
    }
  }
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() != 2) return Fail("expected one command; see --help", 2);
  const std::string cmd = args[1];
  const Command* command = FindCommand(cmd);
  if (command == nullptr) return Fail("unknown command " + cmd + "; see --help", 2);

  v1::Config config;
  const std::string config_path = FindConfig();
  if (!config_path.empty()) {
    auto config_or = LoadConfig(config_path);
    if (!config_or.ok()) return Fail("config " + config_path + ": " + std::string(config_or.status().message()), 2);
    config = *config_or;
  } else if (!command->calls_control || absl::GetFlag(FLAGS_control).empty()) {
    return Fail(absl::StrCat("no config found. ", kConfigOrder), 2);
  }
  std::string app_id = absl::GetFlag(FLAGS_app).empty() ? config.default_app() : absl::GetFlag(FLAGS_app);

  if (cmd == "sign") return Sign(config, app_id);
  if (cmd == "nats-config") return NatsConfig(config);
  if (cmd == "gentoken") {
    if (absl::GetFlag(FLAGS_user).empty()) return Fail("gentoken needs --user", 2);
    return GenToken(config, app_id);
  }

  std::string address = absl::GetFlag(FLAGS_control);
  if (address.empty() && config.control().addresses_size() > 0) address = config.control().addresses(0);
  if (address.empty()) return Fail("no control address: --control=HOST:PORT or control.addresses in the config", 2);
  std::string api_key = absl::GetFlag(FLAGS_api_key);
  if (api_key.empty() && std::getenv("SWITCHBOARD_API_KEY")) api_key = std::getenv("SWITCHBOARD_API_KEY");
  if (api_key.empty() && config.api_keys_size() > 0) api_key = config.api_keys(0);
  if (api_key.empty()) return Fail("no API key: --api_key, $SWITCHBOARD_API_KEY or api_keys in the config", 2);

  // Answers for users with many fat sessions run past gRPC's default 4 MiB
  // receive limit: this client reads whatever control sends (or pages).
  grpc::ChannelArguments channel_args;
  channel_args.SetMaxReceiveMessageSize(-1);
  auto stub = v1::Control::NewStub(grpc::CreateCustomChannel(address, ChannelCredentials(config), channel_args));
  auto make_ctx = [&](grpc::ClientContext* ctx) {
    ctx->AddMetadata("authorization", "apikey " + api_key);
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(absl::GetFlag(FLAGS_timeout_ms)));
  };
  auto check = [](const grpc::Status& st) {
    if (st.ok()) return 0;
    return Fail(StatusName(st.error_code()) + ": " + st.error_message(), 3);
  };

  if (cmd == "connections") {
    v1::UserConnectionsRequest req;
    req.set_app_id(app_id);
    req.set_user_id(absl::GetFlag(FLAGS_user));
    req.set_page_size(static_cast<uint32_t>(std::max(0, absl::GetFlag(FLAGS_page_size))));
    const int repeat = std::max(1, absl::GetFlag(FLAGS_repeat));
    v1::UserConnectionsResponse resp;
    grpc::Status st = TimedCalls(repeat, [&] {
      grpc::ClientContext ctx;
      make_ctx(&ctx);
      resp.Clear();
      return stub->UserConnections(&ctx, req, &resp);
    });
    if (int rc = check(st)) return rc;
    // With --page_size, every page, merged into one answer: complete only if
    // every page was.
    while (!resp.result().next_page_token().empty()) {
      v1::UserConnectionsResponse page;
      req.set_page_token(resp.result().next_page_token());
      grpc::ClientContext ctx;
      make_ctx(&ctx);
      if (int rc = check(stub->UserConnections(&ctx, req, &page))) return rc;
      auto* all = resp.mutable_result();
      for (auto& [id, info] : *page.mutable_result()->mutable_connections()) (*all->mutable_connections())[id] = info;
      if (!page.result().complete()) {
        all->set_complete(false);
        all->set_incomplete_reason(page.result().incomplete_reason());
      }
      all->set_next_page_token(page.result().next_page_token());
    }
    PrintJson(resp);
    return 0;
  }
  if (cmd == "terminate") {
    v1::TerminateUserRequest req;
    req.set_app_id(app_id);
    req.set_user_id(absl::GetFlag(FLAGS_user));
    for (auto id : absl::StrSplit(absl::GetFlag(FLAGS_except), ',', absl::SkipEmpty())) {
      req.add_except_client_ids(std::string(id));
    }
    req.set_code(static_cast<uint32_t>(absl::GetFlag(FLAGS_code)));
    req.set_reason(absl::GetFlag(FLAGS_reason));
    v1::TerminateUserResponse resp;
    if (absl::GetFlag(FLAGS_users_from_stdin)) {
      char line[1024];
      while (std::fgets(line, sizeof(line), stdin) != nullptr) {
        req.set_user_id(std::string(absl::StripAsciiWhitespace(line)));
        grpc::ClientContext ctx;
        make_ctx(&ctx);
        resp.Clear();
        const absl::Time t0 = absl::Now();
        const grpc::Status st = stub->TerminateUser(&ctx, req, &resp);
        const double ms = absl::ToDoubleMilliseconds(absl::Now() - t0);
        nlohmann::json j = {{"user", req.user_id()},     {"t0_us", absl::ToUnixMicros(t0)},
                            {"ms", ms},                  {"ok", st.ok()},
                            {"closed", resp.closed()},   {"complete", resp.coverage().complete()}};
        std::printf("%s\n", j.dump().c_str());
        std::fflush(stdout);
      }
      return 0;
    }
    grpc::ClientContext ctx;
    make_ctx(&ctx);
    if (int rc = check(stub->TerminateUser(&ctx, req, &resp))) return rc;
    PrintJson(resp);
    return 0;
  }
  if (cmd == "disconnect") {
    v1::DisconnectRequest req;
    req.set_app_id(app_id);
    req.set_client_id(absl::GetFlag(FLAGS_client));
    req.set_code(static_cast<uint32_t>(absl::GetFlag(FLAGS_code)));
    req.set_reason(absl::GetFlag(FLAGS_reason));
    v1::DisconnectResponse resp;
    grpc::ClientContext ctx;
    make_ctx(&ctx);
    if (int rc = check(stub->Disconnect(&ctx, req, &resp))) return rc;
    PrintJson(resp);
    return 0;
  }
  if (cmd == "send") {
    google::protobuf::Value data;
    if (!google::protobuf::util::JsonStringToMessage(absl::GetFlag(FLAGS_data), &data).ok()) {
      return Fail("--data is not valid JSON", 2);
    }
    if (!absl::GetFlag(FLAGS_client).empty()) {
      grpc::ClientContext ctx;
      make_ctx(&ctx);
      v1::SendToClientRequest req;
      req.set_app_id(app_id);
      req.set_client_id(absl::GetFlag(FLAGS_client));
      req.set_event(absl::GetFlag(FLAGS_event));
      *req.mutable_data() = data;
      v1::SendToClientResponse resp;
      if (int rc = check(stub->SendToClient(&ctx, req, &resp))) return rc;
      PrintJson(resp);
      return 0;
    }
    v1::SendToUserRequest req;
    req.set_app_id(app_id);
    req.set_user_id(absl::GetFlag(FLAGS_user));
    req.set_event(absl::GetFlag(FLAGS_event));
    *req.mutable_data() = data;
    for (auto id : absl::StrSplit(absl::GetFlag(FLAGS_except), ',', absl::SkipEmpty())) {
      req.add_except_client_ids(std::string(id));
    }
    v1::SendToUserResponse resp;
    const int repeat = std::max(1, absl::GetFlag(FLAGS_repeat));
    grpc::Status st = TimedCalls(repeat, [&] {
      grpc::ClientContext call_ctx;
      make_ctx(&call_ctx);
      resp.Clear();
      return stub->SendToUser(&call_ctx, req, &resp);
    });
    if (int rc = check(st)) return rc;
    PrintJson(resp);
    return 0;
  }
  if (cmd == "gateways") {
    // With --repeat this is the reference for `connections --repeat`: one
    // control round trip without the NATS fan-out.
    const int repeat = std::max(1, absl::GetFlag(FLAGS_repeat));
    v1::ListGatewaysResponse resp;
    grpc::Status st = TimedCalls(repeat, [&] {
      grpc::ClientContext ctx;
      make_ctx(&ctx);
      resp.Clear();
      return stub->ListGateways(&ctx, v1::ListGatewaysRequest(), &resp);
    });
    if (int rc = check(st)) return rc;
    PrintJson(resp);
    return 0;
  }
  return Fail("unknown command " + cmd + "; see --help", 2);  // not reached: checked above
}
