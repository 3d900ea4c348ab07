#include "common/health_http.h"

#include "common/metrics.h"

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string_view>
#include <vector>

#include <libwebsockets.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace switchboard {

void RouteLwsLogs() {
  // Never destroyed: lws may log while the process exits.
  static std::shared_ptr<spdlog::logger>* logger = new std::shared_ptr<spdlog::logger>();  // NOLINT
  *logger = spdlog::get(spdlog::default_logger()->name() + ".lws");
  lws_set_log_level(getenv("SB_LWS_DEBUG") ? 0xfff : LLL_ERR, [](int level, const char* line) {
    if (*logger == nullptr || line == nullptr) return;
    std::string_view text(line);
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.remove_suffix(1);
    const spdlog::level::level_enum to = level == LLL_ERR    ? spdlog::level::err
                                         : level == LLL_WARN ? spdlog::level::warn
                                         : (level & (LLL_NOTICE | LLL_INFO | LLL_USER)) != 0 ? spdlog::level::info
                                                                                               : spdlog::level::debug;
    (*logger)->log(to, "{}", text);
  });
}

std::pair<int, std::string> HealthHttpServer::Answer(const std::string& path, const Readiness& readiness,
                                                     const Readiness& liveness) {
  if (path == "/livez" || path == "/healthz") {
    const std::string why = liveness ? liveness() : "";
    if (why.empty()) return {200, "ok\n"};
    return {503, absl::StrCat("not live: ", why, "\n")};
  }
  if (path == "/readyz") {
    const std::string why = readiness ? readiness() : "";
    if (why.empty()) return {200, "ready\n"};
    return {503, absl::StrCat("not ready: ", why, "\n")};
  }
  return {404, "not found\n"};
}

int HealthHttpServer::Respond(struct lws* wsi, int status, const std::string& body, const char* content_type) {
  // Headers and the short body in one write: HTTP/1.1 only (no h2 here).
  std::vector<unsigned char> buf(LWS_PRE + 512 + body.size());
  unsigned char* start = buf.data() + LWS_PRE;
  unsigned char* p = start;
  unsigned char* end = buf.data() + buf.size() - 1;
  if (lws_add_http_common_headers(wsi, static_cast<unsigned int>(status), content_type,
                                  body.size(), &p, end) ||
      lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CACHE_CONTROL,
                                   reinterpret_cast<const unsigned char*>("no-store"), 8, &p, end) ||
      lws_finalize_http_header(wsi, &p, end)) {
    return -1;
  }
  std::memcpy(p, body.data(), body.size());
  p += body.size();
  if (lws_write(wsi, start, static_cast<size_t>(p - start), LWS_WRITE_HTTP_HEADERS) < 0) return -1;
  return lws_http_transaction_completed(wsi) ? -1 : 0;
}

int HealthHttpServer::Callback(struct lws* wsi, int reason, void*, void* in, size_t) {
  if (reason != LWS_CALLBACK_HTTP) return 0;
  auto* self = static_cast<HealthHttpServer*>(lws_context_user(lws_get_context(wsi)));
  if (self->metrics_ != nullptr && std::strcmp(static_cast<const char*>(in), "/metrics") == 0) {
    return Respond(wsi, 200, self->metrics_->Serialize(), Metrics::kContentType);
  }
  auto [status, body] = Answer(std::string(static_cast<const char*>(in)), self->readiness_, self->liveness_);
  return Respond(wsi, status, body);
}

absl::StatusOr<std::unique_ptr<HealthHttpServer>> HealthHttpServer::Start(const std::string& listen,
                                                                         Readiness readiness, Readiness liveness,
                                                                         const Metrics* metrics) {
  const auto colon = listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("health listen address '", listen, "' is not host:port"));
  }
  std::unique_ptr<HealthHttpServer> server(new HealthHttpServer());
  server->readiness_ = std::move(readiness);
  server->liveness_ = std::move(liveness);
  server->metrics_ = metrics;
  server->host_ = listen.substr(0, colon);
  if (server->host_ == "0.0.0.0" || server->host_ == "[::]") server->host_.clear();

  static const lws_protocols kProtocols[] = {
      {"http", [](lws* wsi, lws_callback_reasons reason, void* user, void* in, size_t len) {
         return Callback(wsi, reason, user, in, len);
       }, 0, 0, 0, nullptr, 0},
      {nullptr, nullptr, 0, 0, 0, nullptr, 0}};
  lws_context_creation_info info;
  std::memset(&info, 0, sizeof(info));
  info.port = port;
  info.iface = server->host_.empty() ? nullptr : server->host_.c_str();
  info.protocols = kProtocols;
  info.user = server.get();
  info.options = LWS_SERVER_OPTION_DISABLE_IPV6;
  info.count_threads = 1;
  server->context_ = lws_create_context(&info);
  if (server->context_ == nullptr) {
    return absl::UnavailableError(absl::StrCat("cannot listen for health probes on ", listen));
  }
  lws_vhost* vh = lws_get_vhost_by_name(server->context_, "default");
  server->port_ = vh ? lws_get_vhost_listen_port(vh) : port;
  HealthHttpServer* raw = server.get();
  server->thread_ = std::thread([raw] {
    while (!raw->stop_.load()) lws_service(raw->context_, 0);
  });
  return server;
}

HealthHttpServer::~HealthHttpServer() {
  stop_ = true;
  if (context_ != nullptr) lws_cancel_service(context_);
  if (thread_.joinable()) thread_.join();
  if (context_ != nullptr) lws_context_destroy(context_);
}

}  // namespace switchboard
