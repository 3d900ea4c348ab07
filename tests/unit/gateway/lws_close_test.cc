// Pins down how libwebsockets 4.1 as Debian ships it (built with _DEBUG, libuv
// event library) sends a server-initiated close, because ws_server.cc depends
// on it:
//
//  * The documented way, lws_close_reason() then returning -1 from the
//    callback, sends NO close frame: lws's service loop, in a _DEBUG build with
//    libuv, closes the wsi a second time right away ("close_and_handled uv
//    repeat test" in core-net/service.c), and a second close while lws waits
//    to send the close frame kills the socket. Clients see 1006.
//  * lws_close_reason() then lws_set_timeout(LWS_TO_KILL_SYNC) from outside
//    the wsi's own callback (the context's cancel event) runs lws's close
//    handshake: it sends the frame with our code and reason and waits for the
//    peer's answer. This is what the gateway does.
//
// If the first expectation ever fails, lws sends the frame on return -1 and
// the detour in WsServer::StartCloseHandshakes() can go.
#include <arpa/inet.h>
#include <libwebsockets.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>

#include "gtest/gtest.h"

namespace {

enum class Mode { kReturnMinusOne, kKillSyncFromCancel };

struct Server {
  Mode mode;
  lws_context* context = nullptr;
  std::atomic<lws*> pending{nullptr};
  std::atomic<bool> stop{false};
  std::atomic<bool> destroying{false};
};

constexpr int kCode = 4001;
constexpr char kReason[] = "bye";

int Callback(lws* wsi, lws_callback_reasons reason, void*, void*, size_t) {
  auto* server = static_cast<Server*>(lws_context_user(lws_get_context(wsi)));
  auto close_reason = [wsi] {
    unsigned char why[sizeof(kReason)];
    std::memcpy(why, kReason, sizeof(kReason));
    lws_close_reason(wsi, static_cast<lws_close_status>(kCode), why, sizeof(kReason) - 1);
  };
  switch (reason) {
    case LWS_CALLBACK_ESTABLISHED:
      if (server->mode == Mode::kReturnMinusOne) {
        lws_callback_on_writable(wsi);
      } else {
        server->pending = wsi;
        lws_cancel_service(lws_get_context(wsi));
      }
      return 0;
    case LWS_CALLBACK_SERVER_WRITEABLE:
      if (server->mode == Mode::kReturnMinusOne) {
        close_reason();
        return -1;
      }
      return 0;
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
      if (lws* w = server->pending.exchange(nullptr)) {
        unsigned char why[sizeof(kReason)];
        std::memcpy(why, kReason, sizeof(kReason));
        lws_close_reason(w, static_cast<lws_close_status>(kCode), why, sizeof(kReason) - 1);
        lws_set_timeout(w, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_SYNC);
      }
      // lws 4.1 with libuv: destroying the context from inside the loop
      // closes its handles, the loop runs dry and lws_service() returns.
      if (server->stop && !server->destroying.exchange(true)) lws_context_destroy(server->context);
      return 0;
    default:
      return lws_callback_http_dummy(wsi, reason, nullptr, nullptr, 0);
  }
}

// A raw client: upgrade, then read frames until the close frame or EOF.
// Returns the close code and reason, or -1 if the socket ended without one.
std::pair<int, std::string> CloseSeenByClient(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return {-2, "connect failed"};
  }
  const std::string req =
      "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
      "Sec-WebSocket-Protocol: probe\r\n\r\n";
  (void)!write(fd, req.data(), req.size());
  std::string in;
  char buf[4096];
  size_t body = std::string::npos;
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    in.append(buf, static_cast<size_t>(n));
    if (body == std::string::npos) {
      body = in.find("\r\n\r\n");
      if (body == std::string::npos) continue;
      body += 4;
    }
    // Server frames are unmasked; small payloads only here.
    size_t at = body;
    while (at + 2 <= in.size()) {
      const auto op = static_cast<unsigned char>(in[at]) & 0x0F;
      const size_t len = static_cast<unsigned char>(in[at + 1]) & 0x7F;
      if (len > 125 || at + 2 + len > in.size()) break;
      if (op == 0x8) {
        int code = len >= 2 ? (static_cast<unsigned char>(in[at + 2]) << 8) | static_cast<unsigned char>(in[at + 3])
                            : 1005;
        std::string reason = len > 2 ? in.substr(at + 4, len - 2) : "";
        // Answer the close, as a client does.
        const unsigned char echo[] = {0x88, 0x82, 0, 0, 0, 0, static_cast<unsigned char>(code >> 8),
                                      static_cast<unsigned char>(code & 0xFF)};
        (void)!write(fd, echo, sizeof(echo));
        close(fd);
        return {code, reason};
      }
      at += 2 + len;
    }
  }
  close(fd);
  return {-1, ""};
}

std::pair<int, std::string> RunProbe(Mode mode) {
  static const lws_protocols kProtocols[] = {{"probe", Callback, 0, 1024, 0, nullptr, 0},
                                             {nullptr, nullptr, 0, 0, 0, nullptr, 0}};
  Server server;
  server.mode = mode;
  lws_set_log_level(LLL_ERR, nullptr);
  lws_context_creation_info info;
  std::memset(&info, 0, sizeof(info));
  info.port = 0;
  info.iface = "127.0.0.1";
  info.protocols = kProtocols;
  info.user = &server;
  info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_UV_NO_SIGSEGV_SIGFPE_SPIN;
  server.context = lws_create_context(&info);
  if (server.context == nullptr) return {-3, "no context"};
  int port = lws_get_vhost_listen_port(lws_get_vhost_by_name(server.context, "default"));
  std::thread loop([&] { lws_service(server.context, 0); });
  auto seen = CloseSeenByClient(port);
  server.stop = true;
  lws_cancel_service(server.context);
  loop.join();
  lws_context_destroy(server.context);
  return seen;
}

TEST(LwsClose, ReturningMinusOneAfterCloseReasonSendsNoCloseFrameInDebiansBuild) {
  auto [code, reason] = RunProbe(Mode::kReturnMinusOne);
  EXPECT_EQ(code, -1) << "lws now sends the close frame (" << code << " " << reason
                      << ") on return -1: WsServer::StartCloseHandshakes() can be simplified";
}

TEST(LwsClose, KillSyncFromTheCancelEventRunsTheCloseHandshake) {
  auto [code, reason] = RunProbe(Mode::kKillSyncFromCancel);
  EXPECT_EQ(code, kCode);
  EXPECT_EQ(reason, kReason);
}

}  // namespace
