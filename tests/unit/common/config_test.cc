#include "common/config.h"

#include <cstdlib>
#include <ostream>

#include "absl/strings/match.h"
#include "absl/strings/str_replace.h"
#include "gtest/gtest.h"

namespace switchboard {
namespace {

constexpr char kMinimal[] = R"(
cluster: test
nats_url: nats://127.0.0.1:4222
apps:
  - id: demo
    key: demo-key
    secret: demo-secret-123
api_keys: [api-key-12345]
cluster_token: cluster-token-0123456789
http_proxy_token: proxy-token-0123456789
nats_gateway: {user: gw, password: gw-password-1234}
nats_control: {user: ctl, password: ctl-password-1234}
)";

absl::Status Load(const std::string& text) {
  auto c = ParseConfig(text);
  if (!c.ok()) return c.status();
  return ValidateConfig(*c);
}

TEST(Config, MinimalFileGetsDefaults) {
  auto c = ParseConfig(kMinimal);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(ValidateConfig(*c).ok());
  EXPECT_EQ(c->default_app(), "demo");
  EXPECT_EQ(c->control().listen(), "127.0.0.1:50051");
  EXPECT_EQ(c->control().addresses(0), "127.0.0.1:50051");
  EXPECT_EQ(c->control().default_timeout_ms(), 1000u);
  EXPECT_EQ(c->control().heartbeat_interval_ms(), 1000u);
  EXPECT_EQ(c->control().lease_ms(), 3000u);
  EXPECT_EQ(c->control().bus_busy_poll_us(), 150u);
  EXPECT_EQ(c->gateway().ping_interval_s(), 25u);
  EXPECT_EQ(c->gateway().max_sessions(), 18000u);
  EXPECT_EQ(c->gateway().max_message_bytes(), 65536u);
  EXPECT_EQ(c->gateway().unready_at_percent(), 95u);
  EXPECT_EQ(c->gateway().ready_again_at_percent(), 90u);
  EXPECT_EQ(c->control().shutdown_delay_ms(), 0u);
  ASSERT_NE(FindApp(*c, "demo"), nullptr);
  EXPECT_EQ(FindApp(*c, "demo")->secret(), "demo-secret-123");
  EXPECT_EQ(FindApp(*c, "nope"), nullptr);
}

TEST(Config, AKeyGivenTwiceIsRefusedNamingIt) {
  auto c = ParseConfig(std::string(kMinimal) + "cluster_token: another-token-0123456789\n");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(), "cluster_token: given more than once");
  // Nested, and through the camel-case spelling of the same field.
  c = ParseConfig(std::string(kMinimal) + "control: {lease_ms: 3000, leaseMs: 4000}\n");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(), "control.leaseMs: given more than once");
  c = ParseConfig(std::string(kMinimal) + "api_keys: [another-key-123]\n");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(), "api_keys: given more than once");
}

TEST(Config, BusyPollCanBeTurnedOff) {
  auto c = ParseConfig(std::string(kMinimal) + "control: {bus_busy_poll_us: 0}\n");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(ValidateConfig(*c).ok());
  EXPECT_EQ(c->control().bus_busy_poll_us(), 0u);  // an explicit 0 is not "unset"
}

TEST(Config, JsonIsAcceptedToo) {
  EXPECT_TRUE(Load(R"({"cluster":"c","nats_url":"nats://x:1","apps":[{"id":"a","key":"k","secret":"12345678"}],
                     "api_keys":["12345678"],"cluster_token":"0123456789abcdef",
                     "http_proxy_token":"0123456789abcdef",
                     "nats_gateway":{"user":"g","password":"0123456789ab"},
                     "nats_control":{"user":"c","password":"0123456789ab"}})").ok());
}

TEST(Config, SecretsComeFromTheEnvironment) {
  setenv("SB_TEST_SECRET", "from-the-environment", 1);
  unsetenv("SB_TEST_UNSET");
  auto c = ParseConfig(R"(
cluster: test
nats_url: ${SB_TEST_UNSET:-nats://default:4222}
apps: [{id: demo, key: k, secret: "${SB_TEST_SECRET}"}]
api_keys: [api-key-12345]
)");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->apps(0).secret(), "from-the-environment");
  EXPECT_EQ(c->nats_url(), "nats://default:4222");
}

TEST(Config, UnsetVariableWithoutDefaultNamesTheField) {
  unsetenv("SB_TEST_UNSET");
  auto c = ParseConfig("cluster: ${SB_TEST_UNSET}\n");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("cluster"), absl::string_view::npos) << c.status();
  EXPECT_NE(c.status().message().find("SB_TEST_UNSET"), absl::string_view::npos) << c.status();
}

struct BadCase {
  const char* yaml;
  const char* field;  // the error must name it
};

void PrintTo(const BadCase& c, std::ostream* os) { *os << c.field; }

class ConfigErrors : public ::testing::TestWithParam<BadCase> {};

TEST_P(ConfigErrors, NameTheField) {
  absl::Status st = Load(GetParam().yaml);
  ASSERT_FALSE(st.ok()) << GetParam().yaml;
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find(GetParam().field), absl::string_view::npos) << st;
  EXPECT_EQ(st.message().find('\n'), absl::string_view::npos) << "one line: " << st;
}

INSTANTIATE_TEST_SUITE_P(
    Config, ConfigErrors,
    ::testing::Values(
        BadCase{"cluster: [oops", "YAML"},
        BadCase{"cluster: c\nnats_url: n\napps: [{id: a, key: k, secret: 12345678}]\napi_keys: [12345678]\n"
                "api_key_names: [one, two]\n",
                "api_key_names"},
        BadCase{"cluster: c\nnats_url: n\napps: [{id: a, key: k, secret: 12345678}]\napi_keys: [12345678]\n"
                "api_key_names: [\"has space\"]\n",
                "api_key_names[0]"},
        BadCase{"- a\n- b\n", "config"},
        BadCase{"cluster: c\nnats_url: n\nbogus: 1\n", "bogus"},
        BadCase{"cluster: c\nnats_url: n\napps: {id: a}\n", "apps"},
        BadCase{"cluster: c\nnats_url: n\napps: [{id: a, key: k, secret: 12345678}]\napi_keys: [12345678]\n"
                "gateway: {port: eighty}\n",
                "gateway.port"},
        BadCase{"cluster: c\nnats_url: n\napps: [{id: a, key: k, secret: 12345678}]\napi_keys: [12345678]\n"
                "gateway: {port: -1}\n",
                "gateway.port"},
        BadCase{"cluster: c\nnats_url: n\napps: [{id: a, key: k, secret: 12345678}]\napi_keys: [12345678]\n"
                "gateway: {port: 70000}\n",
                "gateway.port"},
        BadCase{"nats_url: n\napps: [{id: a, key: k, secret: 12345678}]\napi_keys: [12345678]\n", "cluster"},
        BadCase{"cluster: a.b\nnats_url: n\napps: [{id: a, key: k, secret: 12345678}]\napi_keys: [12345678]\n",
                "cluster"},
        BadCase{"cluster: c\napps: [{id: a, key: k, secret: 12345678}]\napi_keys: [12345678]\n", "nats_url"},
        BadCase{"cluster: c\nnats_url: n\napi_keys: [12345678]\n", "apps"},
        BadCase{"cluster: c\nnats_url: n\napps: [{id: a, key: k, secret: short}]\napi_keys: [12345678]\n",
                "apps[0].secret"},
        BadCase{"cluster: c\nnats_url: n\napps: [{id: a, key: k, secret: 12345678}, {id: a, key: k2, "
                "secret: 12345678}]\napi_keys: [12345678]\n",
                "apps[1].id"},
        BadCase{"cluster: c\nnats_url: n\napps: [{id: a, key: k, secret: 12345678}]\napi_keys: [12345678]\n"
                "default_app: b\n",
                "default_app"},
        BadCase{"cluster: c\nnats_url: n\napps: [{id: a, key: k, secret: 12345678}]\n", "api_keys"},
        BadCase{"cluster: c\nnats_url: n\napps: [{id: a, key: k, secret: 12345678}]\napi_keys: [12345678]\n",
                "cluster_token"},
        BadCase{"cluster: c\nnats_url: n\napps: [{id: a, key: k, secret: 12345678}]\napi_keys: [12345678]\n"
                "cluster_token: 0123456789abcdef\nhttp_proxy_token: short\n"
                "nats_gateway: {user: g, password: 0123456789ab}\nnats_control: {user: c, password: 0123456789ab}\n",
                "http_proxy_token"},
        BadCase{"cluster: c\nnats_url: n\napps: [{id: a, key: k, secret: 12345678}]\napi_keys: [12345678]\n"
                "cluster_token: 0123456789abcdef\nhttp_proxy_token: 0123456789abcdef\n",
                "nats_gateway.user"},
        BadCase{"cluster: c\nnats_url: n\napps: [{id: a, key: k, secret: 12345678}]\napi_keys: [12345678]\n"
                "cluster_token: 0123456789abcdef\nhttp_proxy_token: 0123456789abcdef\n"
                "nats_gateway: {user: g, password: 0123456789ab}\nnats_control: {user: g, password: 0123456789ab}\n",
                "nats_control.user"},
        BadCase{"cluster: c\nnats_url: n\napps: [{id: a, key: k, secret: 12345678}]\napi_keys: [12345678]\n"
                "control: {heartbeat_interval_ms: 1000, lease_ms: 1500}\n",
                "control.lease_ms"},
        BadCase{"cluster: c\nnats_url: n\napps: [{id: a, key: k, secret: 12345678}]\napi_keys: [12345678]\n"
                "control: {listen: nohostport}\n",
                "control.listen"},
        BadCase{"cluster: c\nnats_url: n\napps: [{id: a, key: k, secret: 12345678}]\napi_keys: [12345678]\n"
                "control: {bus_busy_poll_us: 5000}\n",
                "control.bus_busy_poll_us"},
        BadCase{"cluster: c\nnats_url: n\napps: [{id: a, key: k, secret: 12345678}]\napi_keys: [12345678]\n"
                "gateway: {max_sessions: 20000000}\n",
                "gateway.max_sessions"},
        BadCase{"cluster: c\nnats_url: n\napps: [{id: a, key: k, secret: 12345678}]\napi_keys: [12345678]\n"
                "gateway: {max_message_bytes: 10}\n",
                "gateway.max_message_bytes"},
        BadCase{"cluster: c\nnats_url: n\napps: [{id: a, key: k, secret: 12345678}]\napi_keys: [12345678]\n"
                "gateway: {unready_at_percent: 101}\n",
                "gateway.unready_at_percent"},
        BadCase{"cluster: c\nnats_url: n\napps: [{id: a, key: k, secret: 12345678}]\napi_keys: [12345678]\n"
                "gateway: {unready_at_percent: 80, ready_again_at_percent: 85}\n",
                "gateway.ready_again_at_percent"},
        BadCase{"cluster: c\nnats_url: n\napps: [{id: a, key: k, secret: 12345678}]\napi_keys: [12345678]\n"
                "control: {shutdown_delay_ms: 61000}\n",
                "control.shutdown_delay_ms"},
        BadCase{"cluster: c\nnats_url: n\napps: [{id: a, key: k, secret: 12345678, personal_channel_namespace: 'a:b'}]\n"
                "api_keys: [12345678]\n",
                "apps[0].personal_channel_namespace"},
        BadCase{"cluster: c\nnats_url: n\napps: [{id: a, key: k, secret: 12345678}]\napi_keys: [12345678]\n"
                "control: {max_send_bytes: 2000000}\n",
                "control.max_send_bytes"}),
    [](const ::testing::TestParamInfo<BadCase>& info) {
      std::string name = info.param.field;
      for (char& ch : name) {
        if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
      }
      return name + "_" + std::to_string(info.index);
    });

TEST(Config, EachRoleNeedsOnlyItsOwnSecretsAndDropsTheOthers) {
  // As the Kubernetes ConfigMap writes it: every pod reads the same file,
  // with only its own secrets in its environment.
  constexpr char kShared[] = R"(
cluster: test
nats_url: nats://127.0.0.1:4222
apps: [{id: demo, key: demo-key, secret: demo-secret-123}]
api_keys: ["${SB_TEST_API_KEY:-}"]
cluster_token: cluster-token-0123456789
http_proxy_token: "${SB_TEST_PROXY_TOKEN:-}"
nats_gateway: {user: gw, password: "${SB_TEST_GW_PASSWORD:-}"}
nats_control: {user: ctl, password: "${SB_TEST_CTL_PASSWORD:-}"}
)";
  ::setenv("SB_TEST_GW_PASSWORD", "gw-password-1234", 1);
  auto gw = ParseConfig(kShared);
  ASSERT_TRUE(gw.ok()) << gw.status();
  ASSERT_TRUE(ValidateConfig(*gw, ConfigRole::kGateway).ok()) << ValidateConfig(*gw, ConfigRole::kGateway);
  EXPECT_EQ(gw->api_keys_size(), 0);
  EXPECT_EQ(gw->nats_gateway().password(), "gw-password-1234");
  // Control needs its own: without them it refuses, naming the field.
  auto ctl = ParseConfig(kShared);
  ASSERT_TRUE(ctl.ok());
  auto st = ValidateConfig(*ctl, ConfigRole::kControl);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(std::string(st.message()).find("api_keys"), std::string::npos) << st;
  ::setenv("SB_TEST_API_KEY", "api-key-12345", 1);
  ::setenv("SB_TEST_PROXY_TOKEN", "proxy-token-0123456789", 1);
  ::setenv("SB_TEST_CTL_PASSWORD", "ctl-password-1234", 1);
  ctl = ParseConfig(kShared);
  ASSERT_TRUE(ctl.ok());
  ASSERT_TRUE(ValidateConfig(*ctl, ConfigRole::kControl).ok()) << ValidateConfig(*ctl, ConfigRole::kControl);
  EXPECT_TRUE(ctl->nats_gateway().password().empty());  // dropped: control never uses it
  EXPECT_EQ(ctl->nats_control().password(), "ctl-password-1234");
  // The gateway drops control's and the proxy's secrets even when given them.
  gw = ParseConfig(kShared);
  ASSERT_TRUE(gw.ok());
  ASSERT_TRUE(ValidateConfig(*gw, ConfigRole::kGateway).ok());
  EXPECT_TRUE(gw->nats_control().password().empty());
  EXPECT_TRUE(gw->http_proxy_token().empty());
  EXPECT_EQ(gw->api_keys_size(), 0);
  // Everything at once (switchboardctl) still needs them all.
  ::unsetenv("SB_TEST_GW_PASSWORD");
  auto all = ParseConfig(kShared);
  ASSERT_TRUE(all.ok());
  EXPECT_FALSE(ValidateConfig(*all).ok());
  for (const char* v : {"SB_TEST_API_KEY", "SB_TEST_PROXY_TOKEN", "SB_TEST_CTL_PASSWORD"}) ::unsetenv(v);
}

TEST(Config, MissingFileIsAnError) {
  auto c = LoadConfig("/nonexistent/switchboard.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("/nonexistent/switchboard.yaml"), absl::string_view::npos);
}

TEST(PlaceholderSecrets, ThePublishedValuesAreRecognisedAndRealOnesAreNot) {
  for (const char* v : {"dev-api-key-change-me", "demo-secret-CHANGE-ME", "changeme-please-0123",
                        "REPLACE-with-the-app-HMAC-secret-used-to-sign-client-tokens", "replace_me_0123456789"}) {
    EXPECT_TRUE(IsPlaceholderSecret(v)) << v;
  }
  for (const char* v : {"3f9a1c0e5b7d2468ace0bdf13579ace0", "test-api-key-1234", "exchange-mechanism-0001"}) {
    EXPECT_FALSE(IsPlaceholderSecret(v)) << v;
  }
}

TEST(PlaceholderSecrets, TheErrorNamesTheFirstFieldThisRoleUses) {
  const std::string base =
      "cluster: c\nnats_url: n\napps: [{id: a, key: k, secret: 0123456789abcdef}]\napi_keys: [KEY]\n"
      "cluster_token: 0123456789abcdef\nhttp_proxy_token: 0123456789abcdef\n"
      "nats_gateway: {user: g, password: 0123456789ab}\nnats_control: {user: c, password: 0123456789ab}\n";
  auto config = ParseConfig(absl::StrReplaceAll(base, {{"KEY", "dev-api-key-change-me"}}));
  ASSERT_TRUE(config.ok()) << config.status();
  v1::Config control = *config;
  ASSERT_TRUE(ValidateConfig(control, ConfigRole::kControl).ok());
  const absl::Status st = RefusePlaceholderSecrets(control);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StartsWith(st.message(), "api_keys[0]: a placeholder")) << st;
  // A gateway never holds the API keys: nothing to refuse there.
  v1::Config gateway = *config;
  ASSERT_TRUE(ValidateConfig(gateway, ConfigRole::kGateway).ok());
  EXPECT_TRUE(RefusePlaceholderSecrets(gateway).ok());
}

}  // namespace
}  // namespace switchboard
