#include "gateway/ws_server.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/stat.h>

#include <fcntl.h>
#include <libwebsockets.h>
#include <netdb.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <thread>

#include "common/health_http.h"
#include "common/logging.h"
#include "gateway/centrifuge_codec.h"
#include "gateway/frame_guard.h"
#include "gateway/routes.h"
#include "spdlog/spdlog.h"

namespace switchboard::gateway {

// A descriptor the loop watches for another part (Watch): a copy of it,
// adopted by lws as a raw file (lws closes the copy with its wsi).
struct WsServer::Watched {
  lws* wsi = nullptr;
  std::function<void()> on_ready;
};

// The wheel's lws timer, with the way back to its server.
struct WsServer::TickTimer {
  lws_sorted_usec_list_t sul;  // first: lws hands back this pointer
  WsServer* server;
};

namespace {

// A connection's ID lives in lws's own per-connection pointer slot: no
// per-session allocation by lws (a per_session_data_size of 8 bytes costs a
// 32-byte heap block per connection).
// One WebSocket message from a buffer with LWS_PRE bytes of headroom; false
// if the socket is gone (lws keeps what the socket does not take yet).
bool WriteMessage(lws* wsi, std::string& buf, bool binary) {
  const size_t n = buf.size() - LWS_PRE;
  return lws_write(wsi, reinterpret_cast<unsigned char*>(&buf[LWS_PRE]), n,
                   binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT) >= static_cast<int>(n);
}

// A wsi's opaque word: its peer's ConnId once it is one, and before that
// (accepted, no request yet) its Admission key, tagged by the top
// bit (ConnIds count up from 1 and never reach it).
constexpr uintptr_t kSocketTag = uintptr_t{1} << (sizeof(uintptr_t) * 8 - 1);
uintptr_t Opaque(const lws* wsi) { return reinterpret_cast<uintptr_t>(lws_get_opaque_user_data(wsi)); }
ConnId ConnIdOf(const lws* wsi) { return (Opaque(wsi) & kSocketTag) ? 0 : Opaque(wsi); }
void SetConnId(lws* wsi, ConnId id) { lws_set_opaque_user_data(wsi, reinterpret_cast<void*>(static_cast<uintptr_t>(id))); }
const std::string* SocketIpOf(const lws* wsi) {
  return (Opaque(wsi) & kSocketTag) ? reinterpret_cast<const std::string*>(Opaque(wsi) & ~kSocketTag) : nullptr;
}
void SetSocketIp(lws* wsi, const std::string* ip) {
  lws_set_opaque_user_data(wsi, reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(ip) | kSocketTag));
}

constexpr lws_usec_t kTickUs = 10 * LWS_US_PER_MS;
constexpr int64_t kMaxIdleTicks = 100;  // ticks of kTickUs: an idle loop looks at least once a second
constexpr size_t kMaxTimersPerTurn = 64;

// Per-connection receive buffer. Client frames are small (commands, pongs);
// larger ones arrive in pieces and are reassembled up to max_message_bytes.
constexpr size_t kRxBufferBytes = 64;
// How much lws hands to the socket per write. Left at 0, lws uses the rx
// buffer size, so every frame above ~80 bytes would go out truncated, the rest
// copied aside and sent on the next writable turn (and HTTP stream chunks over
// TLS stalled: tests/integration/test_tls.py).
constexpr size_t kTxPacketBytes = 16384;

// Closures waiting for the loop, at most.
constexpr size_t kMaxPosted = 65536;

// A close frame holds at most 125 bytes: the code and 123 of reason.
constexpr size_t kMaxCloseReasonBytes = 123;
// A connection the server closes has this long to take its last frames and
// answer the close frame; then its socket goes. lws 4.1 itself waits 5 s for
// the answer (hard-coded), which let a flood of refused clients hold their
// descriptors for seconds each.
constexpr absl::Duration kClosingDeadline = absl::Seconds(1);

// RFC 6455 7.4: what an endpoint may put in a close frame.
bool SendableCloseCode(int code) {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) || code == 1013 ||
         (code >= 3000 && code <= 4999);
}

// Cuts at most `max` bytes without splitting a UTF-8 sequence.
std::string TruncateUtf8(const std::string& s, size_t max) {
  if (s.size() <= max) return s;
  size_t end = max;
  while (end > 0 && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80) --end;
  return s.substr(0, end);
}

std::string PeerIp(lws* wsi) {
  char buf[128];
  lws_get_peer_simple(wsi, buf, sizeof(buf));
  // IPv4 peers arrive on the dual-stack socket as v4-mapped v6 addresses.
  return WithoutV4Mapping(buf);
}

// Checks a certificate (chain) and key pair on a scratch context: readable,
// the key matches, the certificate not expired. "" when good, otherwise why.
std::string CheckCertificatePair(const char* cert, const char* key) {
  std::unique_ptr<SSL_CTX, void (*)(SSL_CTX*)> scratch(SSL_CTX_new(TLS_server_method()), SSL_CTX_free);
  std::unique_ptr<EVP_PKEY, void (*)(EVP_PKEY*)> pkey(nullptr, EVP_PKEY_free);
  if (FILE* f = fopen(key, "r")) {
    pkey.reset(PEM_read_PrivateKey(f, nullptr, nullptr, nullptr));
    fclose(f);
  }
  std::string why;
  if (!scratch || SSL_CTX_use_certificate_chain_file(scratch.get(), cert) != 1) {
    why = "cannot read the certificate";
  } else if (!pkey) {
    why = "cannot read the key";
  } else if (SSL_CTX_use_PrivateKey(scratch.get(), pkey.get()) != 1 || SSL_CTX_check_private_key(scratch.get()) != 1) {
    why = "the key does not match the certificate";
  } else if (X509* x = SSL_CTX_get0_certificate(scratch.get());
             x == nullptr || X509_cmp_current_time(X509_get0_notAfter(x)) <= 0) {
    why = "the certificate has expired";
  }
  ERR_clear_error();
  return why;
}

std::string HeaderUri(lws* wsi) {
  char buf[1024];
  int n = lws_hdr_copy(wsi, buf, sizeof(buf), WSI_TOKEN_GET_URI);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

}  // namespace

absl::StatusOr<std::unique_ptr<WsServer>> WsServer::Create(const Options& options) {
  std::unique_ptr<WsServer> server(new WsServer(options));
  auto trusted = CidrSet::Parse(options.trusted_proxies);
  if (!trusted.ok()) return absl::InvalidArgumentError("gateway.trusted_proxies: " + std::string(trusted.status().message()));
  server->trusted_ = *std::move(trusted);
  if (!options.tls_cert_file.empty()) {
    // A pair lws would take without a word (an expired certificate) or
    // refuse with a line of its own: said here, once, naming the files.
    if (std::string why = CheckCertificatePair(options.tls_cert_file.c_str(), options.tls_key_file.c_str());
        !why.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("TLS certificate ", options.tls_cert_file, " (key ",
                                                     options.tls_key_file, "): ", why));
    }
  }
  // lws keeps pointers to these for the context's lifetime.
  static const lws_protocols kProtocols[] = {
      {"switchboard",
       [](lws* wsi, lws_callback_reasons reason, void* user, void* in, size_t len) {
         return WsServer::Callback(wsi, static_cast<int>(reason), user, in, len);
       },
       0, kRxBufferBytes, 0, nullptr, kTxPacketBytes},
      // Centrifugo's SDKs ask for protobuf with this WebSocket subprotocol.
      {kCentrifugeProtobufSubprotocol,
       [](lws* wsi, lws_callback_reasons reason, void* user, void* in, size_t len) {
         return WsServer::Callback(wsi, static_cast<int>(reason), user, in, len);
       },
       0, kRxBufferBytes, 0, nullptr, kTxPacketBytes},
      {nullptr, nullptr, 0, 0, 0, nullptr, 0}};

  RouteLwsLogs();  // lws's own lines through the process logger (common/health_http.h)
  lws_context_creation_info info;
  std::memset(&info, 0, sizeof(info));
  // The listening socket is ours (StartListener): lws's own accept spins
  // and logs on every wake-up once descriptors run out, and cannot count
  // sockets before they send a request.
  info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
  info.iface = server->options_.host.c_str();
  info.protocols = kProtocols;
  info.user = server.get();
  info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_VALIDATE_UTF8 |
                 LWS_SERVER_OPTION_UV_NO_SIGSEGV_SIGFPE_SPIN;
  info.timeout_secs = 10;
  // No lws validity timers: lws would re-insert one per connection into its
  // sorted timer list at every upgrade and every WebSocket PONG (an O(N) walk
  // each); the hub's timer wheel keeps every per-connection deadline instead.
  static const lws_retry_bo_t kNoValidityTimers = {};
  info.retry_and_idle_policy = &kNoValidityTimers;
  if (!server->options_.tls_cert_file.empty()) {
    // lws sets up TLS on the vhost only with its global init; its matching
    // de-init at context destroy (CONF_modules_free) would make OpenSSL's own
    // exit handler crash, which main() switches off (OPENSSL_INIT_NO_ATEXIT).
    info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.ssl_cert_filepath = server->options_.tls_cert_file.c_str();
    info.ssl_private_key_filepath = server->options_.tls_key_file.c_str();
    // HTTP/1.1 only: WebSockets and the uni stream are HTTP/1.1 protocols
    // here (lws 4.1 writes the uni stream's chunked framing into an h2 body,
    // and WebSocket over h2 is RFC 8441, which the SDKs do not use). Offering
    // h2 bought nothing and broke every line reader of the uni stream.
    info.alpn = "http/1.1";
  }
  server->context_ = lws_create_context(&info);
  if (server->context_ == nullptr) {
    return absl::UnavailableError("cannot start the WebSocket server on " + options.host + ":" +
                                  std::to_string(options.port));
  }
  server->tick_timer_ = std::make_unique<TickTimer>();
  std::memset(&server->tick_timer_->sul, 0, sizeof(server->tick_timer_->sul));
  server->tick_timer_->server = server.get();
  server->ScheduleTick(absl::Now() + absl::Microseconds(kTickUs));
  if (absl::Status st = server->StartListener(); !st.ok()) return st;
  if (server->port_ <= 0) return absl::UnavailableError("WebSocket server has no listening port");
  return server;
}

absl::Status WsServer::StartListener() {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string port = std::to_string(options_.port);
  if (getaddrinfo(options_.host.empty() ? nullptr : options_.host.c_str(), port.c_str(), &hints, &res) != 0 ||
      res == nullptr) {
    return absl::InvalidArgumentError("gateway.listen_host must be a numeric address: " + options_.host);
  }
  const int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  const bool ok = fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0 &&
                  (!options_.reuse_port || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == 0) &&
                  bind(fd, res->ai_addr, res->ai_addrlen) == 0 && listen(fd, SOMAXCONN) == 0;
  const int err = errno;
  freeaddrinfo(res);
  if (!ok) {
    if (fd >= 0) close(fd);
    return absl::UnavailableError("cannot listen on " + options_.host + ":" + port + ": " + std::strerror(err));
  }
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
  port_ = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                            : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  // lws watches the socket as a raw file on its own loop (and closes it when
  // that wsi goes); readable means connections to accept.
  lws_sock_file_fd_type desc;
  desc.filefd = fd;
  lws_vhost* vh = lws_get_vhost_by_name(context_, "default");
  listen_wsi_ = vh ? lws_adopt_descriptor_vhost(vh, LWS_ADOPT_RAW_FILE_DESC, desc, "switchboard", nullptr) : nullptr;
  if (listen_wsi_ == nullptr) {
    close(fd);
    return absl::InternalError("cannot watch the listening socket on lws's loop");
  }
  listen_fd_ = fd;
  reserve_fd_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
  return absl::OkStatus();
}

void WsServer::Accept() {
  lws_vhost* vh = lws_get_vhost_by_name(context_, "default");
  // A bounded batch per wake-up, so a connect storm cannot starve the rest of
  // the loop; the socket stays readable and libuv calls again.
  for (int i = 0; i < 64 && listen_wsi_ != nullptr; ++i) {
    sockaddr_storage addr{};
    socklen_t addr_len = sizeof(addr);
    int fd = accept4(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &addr_len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE) {
        // Out of descriptors: take the socket with the one held in reserve
        // and close it, so the backlog empties instead of waking us forever.
        if (reserve_fd_ >= 0) {
          close(reserve_fd_);
          fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
          if (fd >= 0) {
            admission_.NoteOutOfDescriptors();
            Shed(fd, "out of descriptors");
          }
          reserve_fd_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
          if (fd >= 0) continue;
        }
        return;
      }
      if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
        static LogLimiter limiter(10, absl::Seconds(10));
        if (uint64_t dropped = 0; limiter.Allow(&dropped)) {
          spdlog::warn("accept: {} ({} such lines dropped before)", std::strerror(errno), dropped);
        }
      }
      return;
    }
    frame_guard::Forget(fd);  // a new socket carries HTTP until its upgrade
    char host[INET6_ADDRSTRLEN] = {0};
    if (addr.ss_family == AF_INET) {
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&addr)->sin_addr, host, sizeof(host));
    } else if (addr.ss_family == AF_INET6) {
      inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&addr)->sin6_addr, host, sizeof(host));
    }
    std::string ip = WithoutV4Mapping(host);
    // A trusted proxy's socket carries many clients: the per-address caps
    // apply once its request says whose it is (ClientIp).
    const bool proxied = !trusted_.empty() && trusted_.Contains(ip);
    const Admission::Accepted accepted = admission_.Accept(std::move(ip), proxied);
    if (accepted.shed != nullptr) {
      Shed(fd, accepted.shed);
      continue;
    }
    // Before lws adopts it (under TLS it may start the handshake at once).
    if (proxied && options_.proxy_protocol) frame_guard::ExpectProxyHeader(fd);
    lws* wsi = lws_adopt_socket_vhost(vh, fd);  // on failure lws closes the socket itself
    if (wsi == nullptr) {
      admission_.Release(accepted.key);
      ++refused_;
      continue;
    }
    SetSocketIp(wsi, accepted.key);
  }
}

void WsServer::Shed(int fd, const char* why) {
  close(fd);
  ++shed_;
  ++shed_unlogged_;
  const absl::Time now = absl::Now();
  if (now - shed_logged_ < absl::Seconds(10)) return;
  spdlog::warn("accept: closed {} new socket(s) at once since the last such line ({}; {} open, cap {})",
               shed_unlogged_, why, admission_.open_sockets(), admission_.max_sockets());
  shed_unlogged_ = 0;
  shed_logged_ = now;
}

void WsServer::StopListener() {
  if (listen_wsi_ == nullptr) return;
  // Closing the socket hands new connections to the other processes sharing
  // the port at once. lws closes the descriptor with the wsi.
  lws* wsi = listen_wsi_;
  listen_wsi_ = nullptr;
  lws_set_timeout(wsi, PENDING_TIMEOUT_KILLED_BY_PARENT, LWS_TO_KILL_SYNC);
}

namespace {
Admission::Options AdmissionOptions(const WsServer::Options& o) {
  Admission::Options a;
  a.max_sessions = o.max_connections;
  a.max_sockets = o.max_sockets;
  a.max_per_ip = o.max_connections_per_ip;
  a.rate_per_ip = o.connect_rate_limit;
  a.rate_total = o.connect_rate_limit_total;
  return a;
}
}  // namespace

WsServer::WsServer(const Options& options) : options_(options), admission_(AdmissionOptions(options)) {
  static_assert(sizeof(Peer) <= 48, "one Peer per connection: keep it small");
}

WsServer::~WsServer() {
  if (context_ != nullptr) lws_context_destroy(context_);
  if (reserve_fd_ >= 0) close(reserve_fd_);
}

void WsServer::Run() {
  loop_thread_ = std::this_thread::get_id();
  // RFC 6455 violations lws 4.1 lets through or drops without a close frame
  // (frame_guard.h): failed here with 1002, through the ordinary close.
  frame_guard::SetHandler(
      [](void* ctx, uint64_t conn, const char* why) {
        spdlog::debug("conn {}: {}: closing 1002", conn, why);
        static_cast<WsServer*>(ctx)->Close(conn, 1002, std::string("protocol error: ") + why);
      },
      this);
  // With the libuv event library lws_service() runs the loop; it returns
  // once Shutdown() has destroyed the context from inside it.
  while (!shut_down_ && lws_service(context_, 0) >= 0) {
  }
  frame_guard::ReleaseThread();
}

void WsServer::StopAccepting() {
  AssertOnLoop(__func__);
  admission_.StopAdmitting();
  draining_ = true;
  StopListener();
}

void WsServer::NotifyWhenEmpty(std::function<void()> fn) {
  AssertOnLoop(__func__);
  if (peers_.empty()) {
    fn();
    return;
  }
  on_empty_ = std::move(fn);
}

void WsServer::MaybeNotifyEmpty() {
  if (on_empty_ && peers_.empty()) {
    auto fn = std::move(on_empty_);
    on_empty_ = nullptr;
    fn();
  }
}

void WsServer::Shutdown() {
  AssertOnLoop(__func__);
  if (shut_down_) return;
  {
    absl::MutexLock lock(&post_mu_);
    post_closed_ = true;
    posted_.clear();
  }
  shut_down_ = true;
  lws_sul_cancel(&tick_timer_->sul);
  StopListener();
  for (auto& w : watched_) {
    if (w->wsi != nullptr) lws_set_timeout(w->wsi, PENDING_TIMEOUT_KILLED_BY_PARENT, LWS_TO_KILL_SYNC);
    w->wsi = nullptr;
  }
  // lws 4.1 with libuv: destroying the context inside the loop closes its
  // handles; the loop then runs dry and lws_service() returns. The
  // destructor's second lws_context_destroy() finishes the job.
  lws_context_destroy(context_);
}

bool WsServer::Post(std::function<void()> fn) {
  absl::MutexLock lock(&post_mu_);
  // After Shutdown() the context is going: nothing may poke it.
  if (post_closed_) return false;
  if (posted_.size() >= kMaxPosted) {
    // The loop is far behind (a flood of bus requests): refuse rather than
    // grow. A dropped bus request shows up as this gateway missing.
    if (posts_dropped_.fetch_add(1) % 10000 == 0) spdlog::warn("loop queue full ({} closures): dropping", kMaxPosted);
    return false;
  }
  posted_.push_back(std::move(fn));
  // Under the lock so Shutdown() cannot destroy the context in between; this
  // only writes to lws's wake-up pipe.
  lws_cancel_service(context_);
  return true;
}

void WsServer::QueueCloseHandshake(Peer& peer, ConnId id) {
  peer.close_sent = true;
  // One wake-up per batch: a non-empty queue already has one coming (every
  // cancel event empties it), so a mass close does not write the cancel pipe
  // once per connection.
  if (ready_to_close_.empty()) lws_cancel_service(context_);
  ready_to_close_.push_back(id);
}

void WsServer::StartCloseHandshakes() {
  std::vector<ConnId> ids;
  ids.swap(ready_to_close_);
  for (ConnId id : ids) {
    auto it = peers_.find(id);
    if (it == peers_.end()) continue;
    Peer& peer = it->second;
    std::string* reason = peer.close_reason.get();
    lws_close_reason(peer.wsi, static_cast<lws_close_status>(peer.close_code),
                     reason ? reinterpret_cast<unsigned char*>(reason->data()) : nullptr, reason ? reason->size() : 0);
    // Not the wsi being serviced (this runs in the context's cancel event),
    // so lws may start its close handshake synchronously: it sends the close
    // frame itself and waits for the peer's answer. Returning -1 from the
    // wsi's own callback would be the documented way, but Debian's lws 4.1
    // (_DEBUG, libuv) then drops the socket without the frame; see
    // tests/unit/gateway/lws_close_test.cc.
    lws_set_timeout(peer.wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_SYNC);
  }
}

bool WsServer::Watch(int fd, std::function<void()> on_ready) {
  return Post([this, fd, fn = std::move(on_ready)]() mutable {
    lws_sock_file_fd_type desc;
    desc.filefd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    lws_vhost* vh = lws_get_vhost_by_name(context_, "default");
    lws* wsi = desc.filefd >= 0 && vh != nullptr
                   ? lws_adopt_descriptor_vhost(vh, LWS_ADOPT_RAW_FILE_DESC, desc, "switchboard", nullptr)
                   : nullptr;
    if (wsi == nullptr) {
      if (desc.filefd >= 0) close(desc.filefd);
      spdlog::error("loop: cannot watch descriptor {}", fd);
      return;
    }
    auto w = std::make_unique<Watched>();
    w->wsi = wsi;
    w->on_ready = std::move(fn);
    watched_.push_back(std::move(w));
  });
}

bool WsServer::RunWatched(lws* wsi) {
  for (auto& w : watched_) {
    if (w->wsi != wsi) continue;
    if (shut_down_) return true;
    // As a batch of posted tasks: the frames it sent written after it, then
    // the close handshakes it made ready started (the closing connections'
    // wsis are not the one being serviced, as in the cancel event).
    deferring_writes_ = true;
    w->on_ready();
    deferring_writes_ = false;
    WriteDeferred();
    StartCloseHandshakes();
    return true;
  }
  return false;
}

void WsServer::RunPosted() {
  std::vector<std::function<void()>> batch;
  {
    absl::MutexLock lock(&post_mu_);
    batch.swap(posted_);
  }
  deferring_writes_ = true;
  for (auto& fn : batch) {
    fn();
    if (shut_down_) {
      deferring_writes_ = false;
      return;  // the rest were posted to a loop that is ending
    }
  }
  deferring_writes_ = false;
  WriteDeferred();
}

void WsServer::WriteDeferred() {
  // Nothing adds to deferred_ meanwhile (deferring is off; a Send from
  // OnWritten below writes at once): walked in place, then emptied, so its
  // capacity serves the next batch.
  for (ConnId id : deferred_) {
    auto it = peers_.find(id);
    if (it == peers_.end()) continue;
    Peer& peer = it->second;
    if (!peer.write_deferred) continue;
    peer.write_deferred = false;
    // What Send() would have done for each frame: written while the socket
    // takes it; the rest (or a close) on a writable turn.
    bool gone = false;
    while (!gone && !peer.outbox.empty() && !lws_partial_buffered(peer.wsi)) {
      gone = !WriteMessage(peer.wsi, peer.outbox.front().buf, peer.outbox.front().binary);
      peer.outbox.pop_front();
    }
    if (gone) {
      // The socket is gone: lws drops the connection at its next turn.
      peer.outbox.clear();
      lws_set_timeout(peer.wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
    } else if (!peer.outbox.empty() || peer.closing) {
      lws_callback_on_writable(peer.wsi);
    } else if (peer.notify_written) {
      peer.notify_written = false;
      hub_->OnWritten(id);
    }
  }
  deferred_.clear();
}

bool WsServer::Send(ConnId id, std::string frame, bool binary) {
  AssertOnLoop(__func__);
  auto it = peers_.find(id);
  if (it == peers_.end() || it->second.closing) return false;
  Peer& peer = it->second;
  if (peer.outbox.size() >= options_.outbox_limit) {
    // Per connection: a flood of slow clients must not flood the log.
    static LogLimiter limiter(10, absl::Seconds(10));
    if (uint64_t dropped = 0; limiter.Allow(&dropped)) {
      spdlog::warn("conn {}: outbox full ({} frames), closing as slow ({} such lines dropped before)", id,
                   peer.outbox.size(), dropped);
    }
    ++counters_.outbox_full_closes;
    // What it has not taken will not reach it: dropped, so that the close
    // frame follows what the kernel already holds (a client that reads
    // again within the closing deadline sees 3008, not a cut).
    peer.outbox.clear();
    Close(id, close_code::kSlow, "slow");
    return false;
  }
  ++counters_.messages_out;
  counters_.bytes_out += frame.size();
  std::string buf;
  buf.reserve(LWS_PRE + frame.size() + 16);
  buf.assign(LWS_PRE, '\0');
  if (peer.http_stream) {
    // One HTTP chunk per line: "<hex len>\r\n<data>\r\n", framed once here.
    char head[20];
    std::snprintf(head, sizeof(head), "%zx\r\n", frame.size());
    buf += head;
    buf += frame;
    buf += "\r\n";
  } else {
    buf += frame;
    if (peer.write_deferred) {
      peer.outbox.push_back({std::move(buf), binary});
      return true;
    }
    if (deferring_writes_ && peer.outbox.empty() && !lws_partial_buffered(peer.wsi)) {
      // Written after the posted batch (WriteDeferred), as it would be now.
      peer.outbox.push_back({std::move(buf), binary});
      peer.write_deferred = true;
      deferred_.push_back(id);
      return true;
    }
    if (peer.outbox.empty() && !lws_partial_buffered(peer.wsi)) {
      // Nothing waits before it: written now. Asking for a writable turn
      // first costs lws+libuv four epoll_ctl calls (uv_poll_start removes
      // and re-adds the descriptor, once to add POLLOUT and once to drop
      // it) and a loop turn: at 19,000 idle sessions, with a ping each
      // every 25 s, that was most of the gateway's idle CPU. lws keeps
      // whatever the socket does not take and sends it before anything
      // else (lws_partial_buffered), asking for POLLOUT itself.
      if (!WriteMessage(peer.wsi, buf, binary)) {
        // The socket is gone: lws drops the connection at its next turn.
        lws_set_timeout(peer.wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
        return false;
      }
      return true;
    }
  }
  peer.outbox.push_back({std::move(buf), binary});
  lws_callback_on_writable(peer.wsi);
  return true;
}

void WsServer::Close(ConnId id, int code, const std::string& reason) {
  AssertOnLoop(__func__);
  auto it = peers_.find(id);
  if (it == peers_.end() || it->second.closing) return;
  if (!SendableCloseCode(code)) {
    // 0, 1005, 1006, 1015 and the like must never reach the wire.
    static LogLimiter limiter(10, absl::Seconds(10));
    if (uint64_t dropped = 0; limiter.Allow(&dropped)) {
      spdlog::warn("conn {}: close code {} cannot be sent; using 1011 ({} such lines dropped before)", id, code,
                   dropped);
    }
    code = 1011;
  }
  it->second.closing = true;
  it->second.close_code = static_cast<uint16_t>(code);  // close codes are below 5000
  ++counters_.closes_by_code[code];  // the server's own codes: a short list
  it->second.close_reason = std::make_unique<std::string>(TruncateUtf8(reason, kMaxCloseReasonBytes));
  Peer& peer = it->second;
  ArmAt(id, absl::Now() + kClosingDeadline);  // replaces the hub's deadline: it has no more use for it
  if (!peer.http_stream && peer.outbox.empty() && !lws_partial_buffered(peer.wsi)) {
    // Nothing to flush first: the close handshake starts at the next cancel
    // event (at once when this runs from one, as bus requests do) instead of
    // one writable turn and one cancel turn later.
    QueueCloseHandshake(peer, id);
    return;
  }
  lws_callback_on_writable(peer.wsi);
}

void WsServer::ArmTimer(ConnId id, absl::Duration after) {
  AssertOnLoop(__func__);
  auto it = peers_.find(id);
  if (it == peers_.end() || it->second.closing) return;  // a closing one keeps its closing deadline
  ArmAt(id, absl::Now() + after);
}

void WsServer::AssertOnLoop(const char* what) const {
  // Loop-only entry points, checked at run time (as Envoy's isThreadSafe()):
  // a call from another thread would race lws and the maps without a trace.
  // Before Run() (wiring) any thread may call.
  const std::thread::id loop = loop_thread_.load(std::memory_order_relaxed);
  if (ABSL_PREDICT_FALSE(loop != std::thread::id() && loop != std::this_thread::get_id())) {
    std::fprintf(stderr, "WsServer::%s called off the loop thread\n", what);
    std::abort();
  }
}

void WsServer::ArmAt(ConnId id, absl::Time when) {
  wheel_.Arm(id, when);  // nothing happens for an unknown connection
  // The tick timer sleeps through empty ticks: wake it earlier if this
  // deadline comes before its next look (not from inside a tick, which
  // schedules the next one itself when it ends).
  if (in_tick_) return;
  const absl::Time due = wheel_.DueAt(when);
  if (due < tick_at_) ScheduleTick(due);
}

void WsServer::ScheduleTick(absl::Time at) {
  if (shut_down_) return;  // the context is going
  tick_at_ = at;
  const int64_t us = absl::ToInt64Microseconds(at - absl::Now());
  lws_sul_schedule(context_, 0, &tick_timer_->sul, &WsServer::OnTick, std::max<int64_t>(1, us));
}

void WsServer::NotifyWhenWritten(ConnId id) {
  AssertOnLoop(__func__);
  auto it = peers_.find(id);
  // Nothing queued: there is nothing to wait for (the hub counts from now).
  if (it != peers_.end() && !it->second.outbox.empty()) it->second.notify_written = true;
}

void WsServer::OnTick(lws_sorted_usec_list_t* sul) {
  reinterpret_cast<TickTimer*>(sul)->server->Tick();
}

void WsServer::CheckTlsFiles(absl::Time now) {
  next_tls_check_ = now + options_.tls_reload_check;
  std::string seen;
  for (const std::string* path : {&options_.tls_cert_file, &options_.tls_key_file}) {
    struct stat st {};
    if (stat(path->c_str(), &st) != 0) {
      seen += "missing;";
      continue;
    }
    seen += absl::StrCat(st.st_ino, ":", st.st_size, ":", st.st_mtim.tv_sec, ".", st.st_mtim.tv_nsec, ";");
  }
  if (tls_files_seen_.empty()) {  // the first look: what lws loaded at start
    tls_files_seen_ = seen;
    return;
  }
  if (seen == tls_files_seen_) return;
  tls_files_seen_ = seen;
  // Read and check the pair on the side first: the live context changes
  // only for a good one. Handshakes run on this thread, so none sees half.
  auto* live = static_cast<SSL_CTX*>(tls_ctx_);
  const char* cert = options_.tls_cert_file.c_str();
  const char* key = options_.tls_key_file.c_str();
  std::string why = CheckCertificatePair(cert, key);
  if (why.empty() && (SSL_CTX_use_certificate_chain_file(live, cert) != 1 ||
             SSL_CTX_use_PrivateKey_file(live, key, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(live) != 1)) {
    why = "the files changed while being read";
  }
  ERR_clear_error();
  if (!why.empty()) {
    ++tls_reload_failures_;
    spdlog::error("TLS: {} changed, but {} ({}): new connections keep the current certificate", cert, why, key);
    return;
  }
  ++tls_reloads_;
  char subject[256] = {0}, until[64] = {0};
  X509* x = SSL_CTX_get0_certificate(live);
  X509_NAME_oneline(X509_get_subject_name(x), subject, sizeof(subject));
  if (BIO* b = BIO_new(BIO_s_mem())) {
    ASN1_TIME_print(b, X509_get0_notAfter(x));
    BIO_read(b, until, sizeof(until) - 1);
    BIO_free(b);
  }
  spdlog::info("TLS: certificate reloaded from {} ({}, valid until {}); connections already open keep theirs", cert,
               subject, until);
}

void WsServer::Tick() {
  if (shut_down_) return;
  counters_.loop_lag.Observe(absl::ToDoubleSeconds(std::max(absl::ZeroDuration(), absl::Now() - tick_at_)));
  if (tls_ctx_ != nullptr && options_.tls_reload_check > absl::ZeroDuration()) {
    const absl::Time now = absl::Now();
    if (now >= next_tls_check_) CheckTlsFiles(now);
  }
  // At most kMaxTimersPerTurn per loop turn: when thousands are due at once
  // (pings after a burst of connects), bus requests and socket events are
  // served in between, never queued behind the whole batch.
  in_tick_ = true;
  const bool more = wheel_.Advance(absl::Now(), [this](ConnId id) {
    auto it = peers_.find(id);
    if (it == peers_.end()) return;
    if (it->second.closing) {
      // Closed by the server and still not gone (a peer that does not read,
      // or does not answer the close frame): the socket goes at lws's next
      // timeout check, as a timed-out one, without another close handshake
      // (a synchronous kill of a socket that cannot take the close frame
      // would start one and wait again).
      spdlog::debug("conn {}: closing deadline passed; dropping the socket", id);
      lws_set_timeout(it->second.wsi, PENDING_TIMEOUT_CLOSE_ACK, LWS_TO_KILL_ASYNC);
      return;
    }
    if (it->second.http_stream && !it->second.http_started) {
      // The uni_http_stream body did not arrive whole by the connect
      // deadline: the slot goes (not this wsi's callback, so synchronously).
      spdlog::debug("conn {}: uni_http_stream body not complete by the connect deadline", id);
      lws_set_timeout(it->second.wsi, PENDING_TIMEOUT_HTTP_CONTENT, LWS_TO_KILL_SYNC);
      return;
    }
    hub_->OnTimer(id);
  }, kMaxTimersPerTurn);
  in_tick_ = false;
  // More due now: right after the socket events and bus requests waiting.
  // Otherwise at the next tick with anything in its slot (at most a second
  // away): an idle gateway does not wake every 10 ms for nothing.
  ScheduleTick(more ? absl::Now() : wheel_.NextDue(kMaxIdleTicks));
}

int WsServer::Callback(lws* wsi, int reason, void* user, void* in, size_t len) {
  lws_context* ctx = lws_get_context(wsi);
  auto* self = ctx ? static_cast<WsServer*>(lws_context_user(ctx)) : nullptr;
  if (self == nullptr) return 0;
  return self->HandleEvent(wsi, reason, static_cast<ConnId*>(user), in, len);
}

int WsServer::OnHttpStreamWritable(lws* wsi, Peer& peer) {
  if (!peer.outbox.empty()) {
    Peer::Frame& f = peer.outbox.front();  // already chunk-framed by Send()
    size_t n = f.buf.size() - LWS_PRE;
    if (lws_write(wsi, reinterpret_cast<unsigned char*>(&f.buf[LWS_PRE]), n, LWS_WRITE_HTTP) < static_cast<int>(n)) {
      return -1;
    }
    peer.outbox.pop_front();
    if (!peer.outbox.empty() || peer.closing) lws_callback_on_writable(wsi);
    return 0;
  }
  if (peer.closing && !peer.close_sent) {
    peer.close_sent = true;
    std::string last(LWS_PRE, '\0');
    last += "0\r\n\r\n";
    size_t n = last.size() - LWS_PRE;
    if (lws_write(wsi, reinterpret_cast<unsigned char*>(&last[LWS_PRE]), n, LWS_WRITE_HTTP_FINAL) <
        static_cast<int>(n)) {
      return -1;
    }
    // One stream per HTTP connection: it ends with the stream.
    return lws_http_transaction_completed(wsi) ? -1 : 0;
  }
  return 0;
}

int WsServer::OnWritable(lws* wsi, ConnId id) {
  auto it = peers_.find(id);
  if (it == peers_.end()) return -1;
  Peer& peer = it->second;
  if (peer.http_stream) return OnHttpStreamWritable(wsi, peer);
  if (!peer.outbox.empty()) {
    Peer::Frame& f = peer.outbox.front();
    if (!WriteMessage(wsi, f.buf, f.binary)) return -1;
    peer.outbox.pop_front();
    if (!peer.outbox.empty() || peer.closing) lws_callback_on_writable(wsi);
    if (peer.outbox.empty() && peer.notify_written) {
      peer.notify_written = false;
      hub_->OnWritten(id);
    }
    return 0;
  }
  if (peer.closing && !peer.close_sent) {
    QueueCloseHandshake(peer, id);
    return 0;
  }
  return 0;
}

ConnectionMeta WsServer::PeerMeta(lws* wsi, const std::string& client_ip) {
  ConnectionMeta meta;
  meta.remote_addr = client_ip;
  char arg[256];
  if (const char* app = lws_get_urlarg_by_name(wsi, "app=", arg, sizeof(arg))) meta.app_id = app;
  RouteMatch route = RouteOf(HeaderUri(wsi));
  if (route.route == Route::kPusherWebSocket) {
    meta.wire = Wire::kPusher;
    meta.pusher_key = std::move(route.pusher_key);
    if (const char* v = lws_get_urlarg_by_name(wsi, "client=", arg, sizeof(arg))) meta.client_name = v;
    if (const char* v = lws_get_urlarg_by_name(wsi, "version=", arg, sizeof(arg))) meta.client_version = v;
    if (const char* v = lws_get_urlarg_by_name(wsi, "protocol=", arg, sizeof(arg))) meta.pusher_protocol = v;
  }
  return meta;
}

int WsServer::StartHttpStream(lws* wsi, ConnId id) {
  Peer& peer = peers_[id];
  if (peer.http_started) return 0;
  peer.http_started = true;
  unsigned char headers[LWS_PRE + 512];
  unsigned char* start = headers + LWS_PRE;
  unsigned char* p = start;
  unsigned char* end = headers + sizeof(headers) - 1;
  static const char kChunked[] = "chunked";
  static const char kNoCache[] = "no-cache";
  if (lws_add_http_common_headers(wsi, HTTP_STATUS_OK, "application/json", LWS_ILLEGAL_HTTP_CONTENT_LEN, &p, end) ||
      lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING,
                                   reinterpret_cast<const unsigned char*>(kChunked), sizeof(kChunked) - 1, &p, end) ||
      lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CACHE_CONTROL, reinterpret_cast<const unsigned char*>(kNoCache),
                                   sizeof(kNoCache) - 1, &p, end) ||
      lws_finalize_write_http_header(wsi, start, &p, end)) {
    return -1;
  }
  // The stream lives as long as the session; lws must not time it out.
  lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
  ConnectionMeta meta = PeerMeta(wsi, *peer.ip);
  meta.wire = Wire::kUniHttpStream;
  if (peer.rx_oversized) peer.rx.assign(options_.max_message_bytes + 1, ' ');
  peer.rx.swap(meta.connect_body);
  hub_->OnOpen(id, std::move(meta));
  return 0;
}

const std::string& WsServer::ClientIp(lws* wsi) {
  const std::string* key = SocketIpOf(wsi);
  std::string peer = key != nullptr ? *key : PeerIp(wsi);
  std::string client = peer;
  if (!trusted_.empty() && trusted_.Contains(peer)) {
    if (options_.proxy_protocol) {
      const std::string* proxied = frame_guard::ProxiedClient(lws_get_socket_fd(wsi));
      if (proxied != nullptr && !proxied->empty()) client = *proxied;
    }
    // Through a trusted proxy (or one more, an HTTP proxy behind the load
    // balancer), the request may say who its client is.
    if (trusted_.Contains(client)) {
      char buf[1024];
      const int n = lws_hdr_copy(wsi, buf, sizeof(buf), WSI_TOKEN_X_FORWARDED_FOR);
      if (n > 0) {
        std::string forwarded = ClientFromForwardedFor(std::string(buf, static_cast<size_t>(n)), trusted_);
        if (!forwarded.empty()) client = std::move(forwarded);
      }
    }
  }
  // The socket counts for the client from now on, not for the proxy.
  const Admission::Key client_key = admission_.Rekey(key, std::move(client));
  if (client_key != key) SetSocketIp(wsi, client_key);
  return *client_key;
}

WsServer::Peer& WsServer::AddPeer(ConnId id, lws* wsi) {
  // The socket was counted for its address when it was accepted; the peer
  // takes that count over (ErasePeer gives it back).
  const std::string* ip = SocketIpOf(wsi);
  if (ip == nullptr) ip = admission_.Rekey(nullptr, PeerIp(wsi));
  SetConnId(wsi, id);
  Peer& peer = peers_[id];
  peer.wsi = wsi;
  peer.ip = ip;
  return peer;
}

void WsServer::ErasePeer(ConnId id) {
  auto it = peers_.find(id);
  if (it == peers_.end()) return;
  wheel_.Cancel(id);
  admission_.Release(it->second.ip);
  peers_.erase(it);
}

int WsServer::HandleEvent(lws* wsi, int reason, ConnId* pss, void* in, size_t len) {
  switch (reason) {
    case LWS_CALLBACK_OPENSSL_LOAD_EXTRA_SERVER_VERIFY_CERTS:
      // Creating the TLS vhost: `user` is its SSL_CTX, kept to load renewed
      // certificates into (CheckTlsFiles).
      tls_ctx_ = static_cast<void*>(pss);
      return 0;

    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
      RunPosted();
      if (!shut_down_) StartCloseHandshakes();
      return 0;

    case LWS_CALLBACK_RAW_RX_FILE:
      if (wsi == listen_wsi_) {
        Accept();
      } else {
        RunWatched(wsi);
      }
      return 0;

    case LWS_CALLBACK_RAW_CLOSE_FILE:
      if (wsi == listen_wsi_) listen_wsi_ = nullptr;
      for (auto& w : watched_) {
        if (w->wsi == wsi) w->wsi = nullptr;
      }
      return 0;

    case LWS_CALLBACK_WSI_DESTROY:
      // A socket that never became a peer (no request, a health probe, a
      // refused upgrade) gives its count back here.
      admission_.Release(SocketIpOf(wsi));
      SetConnId(wsi, 0);
      return 0;

    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
      // lws would switch a plain-http request carrying "Upgrade: h2c" (curl
      // --http2) to HTTP/2 and then break the uni stream's HTTP/1.1 framing;
      // it cannot be told to ignore the header, so the request is refused
      // with a reason the client can act on. WebSocket upgrades go on.
      if (in != nullptr && strcasecmp(static_cast<const char*>(in), "h2c") == 0) {
        if (lws_return_http_status(wsi, HTTP_STATUS_BAD_REQUEST,
                                   "HTTP/2 over cleartext (h2c) is not offered here: use HTTP/1.1")) {
          return -1;
        }
        return 1;
      }
      return 0;

    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: {
      {
        if (!IsWebSocketRoute(RouteOf(HeaderUri(wsi)).route)) return 1;
      }
      if (const char* why = admission_.Refusal(ClientIp(wsi), peers_.size(), absl::Now())) {
        // Before the upgrade: the client gets an HTTP answer it can act on
        // (go elsewhere, retry later), not a dropped socket.
        ++refused_;
        lws_return_http_status(wsi, HTTP_STATUS_SERVICE_UNAVAILABLE, why);
        return 1;
      }
      return 0;
    }

    case LWS_CALLBACK_ESTABLISHED: {
      ConnId id = next_id_++;
      AddPeer(id, wsi);
      frame_guard::Watch(lws_get_socket_fd(wsi), id);
      ConnectionMeta meta = PeerMeta(wsi, *peers_[id].ip);
      const lws_protocols* proto = lws_get_protocol(wsi);
      char arg[64];
      const char* cf = lws_get_urlarg_by_name(wsi, "cf_protocol=", arg, sizeof(arg));
      meta.wire = WebSocketWire(meta.wire == Wire::kPusher ? Route::kPusherWebSocket : Route::kCentrifugeWebSocket,
                                proto != nullptr && proto->name != nullptr ? proto->name : "", cf ? cf : "");
      hub_->OnOpen(id, std::move(meta));
      return 0;
    }

    case LWS_CALLBACK_RECEIVE: {
      ConnId id = ConnIdOf(wsi);
      auto it = peers_.find(id);
      if (it == peers_.end() || it->second.closing) return 0;
      Peer& peer = it->second;
      const bool final = lws_is_final_fragment(wsi);
      counters_.bytes_in += len;
      if (final) ++counters_.messages_in;
      if (final && !peer.rx_oversized && peer.rx.size() == 0) {
        // The whole message in one piece (pongs, most commands): no copy.
        if (len > options_.max_message_bytes) {
          hub_->OnOversizedFrame(id);
        } else {
          hub_->OnFrame(id, std::string_view(static_cast<const char*>(in), len), lws_frame_is_binary(wsi) != 0);
        }
        return 0;
      }
      if (!peer.rx_oversized) {
        if (peer.rx.size() + len > options_.max_message_bytes) {
          peer.rx_oversized = true;
          peer.rx.clear();
          hub_->OnOversizedFrame(id);
        } else {
          peer.rx.append(static_cast<const char*>(in), len);
        }
      }
      if (final) {
        if (!peer.rx_oversized) {
          std::string frame;
          peer.rx.swap(frame);
          hub_->OnFrame(id, frame, lws_frame_is_binary(wsi) != 0);
        }
        peer.rx_oversized = false;
      }
      return 0;
    }

    case LWS_CALLBACK_SERVER_WRITEABLE:
      return OnWritable(wsi, ConnIdOf(wsi));

    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
      ++counters_.client_closes;
      return 0;

    case LWS_CALLBACK_TIMER:
      return 0;  // connection deadlines live on the wheel (Tick)

    case LWS_CALLBACK_CLOSED: {
      frame_guard::Forget(lws_get_socket_fd(wsi));
      ConnId id = ConnIdOf(wsi);
      if (peers_.count(id) > 0) {
        ErasePeer(id);
        hub_->OnClosed(id);
      }
      MaybeNotifyEmpty();
      return 0;
    }

    case LWS_CALLBACK_HTTP: {
      std::string uri = HeaderUri(wsi);
      if (uri.empty()) {
        char buf[1024];
        int n = lws_hdr_copy(wsi, buf, sizeof(buf), WSI_TOKEN_POST_URI);
        if (n > 0) uri.assign(buf, static_cast<size_t>(n));
      }
      const Route route = RouteOf(uri).route;
      if (route == Route::kUniHttpStream) {
        if (lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) <= 0) {
          if (lws_return_http_status(wsi, HTTP_STATUS_METHOD_NOT_ALLOWED, "use POST")) return -1;
          return lws_http_transaction_completed(wsi) ? -1 : 0;
        }
        if (const char* why = admission_.Refusal(ClientIp(wsi), peers_.size(), absl::Now())) {
          ++refused_;
          if (lws_return_http_status(wsi, HTTP_STATUS_SERVICE_UNAVAILABLE, why)) return -1;
          return lws_http_transaction_completed(wsi) ? -1 : 0;
        }
        ConnId id = next_id_++;
        Peer& peer = AddPeer(id, wsi);
        peer.http_stream = true;
        // The whole body by the connect deadline, however it trickles in:
        // an absolute deadline, not lws's content timeout (re-armed per chunk).
        ArmAt(id, absl::Now() + options_.connect_timeout);
        // The body arrives in LWS_CALLBACK_HTTP_BODY; an empty one goes
        // straight to completion.
        return 0;
      }
      if (route == Route::kHealth) {
        // /livez: the loop answered, so the process serves. /readyz: it can
        // do its job (see set_readiness); a draining gateway is unready.
        // The clients' port says the status alone: the reasons (control
        // addresses, session counts) are for the operator's listener.
        auto [status, body] = HealthHttpServer::Answer(uri, [this]() -> std::string {
          if (draining_.load()) return "draining";
          return readiness_ ? readiness_() : "";
        });
        if (status == 503) body = uri == "/readyz" ? "not ready\n" : "not live\n";
        return HealthHttpServer::Respond(wsi, status, body);
      } else {
        if (lws_return_http_status(wsi, HTTP_STATUS_NOT_FOUND, "not found")) return -1;
      }
      return lws_http_transaction_completed(wsi) ? -1 : 0;
    }

    case LWS_CALLBACK_HTTP_BODY: {
      auto it = peers_.find(ConnIdOf(wsi));
      if (it == peers_.end() || !it->second.http_stream || it->second.http_started) return 0;
      Peer& peer = it->second;
      if (peer.rx.size() + len > options_.max_message_bytes) {
        peer.rx_oversized = true;
        return 0;
      }
      peer.rx.append(static_cast<const char*>(in), len);
      return 0;
    }

    case LWS_CALLBACK_HTTP_BODY_COMPLETION: {
      if (peers_.find(ConnIdOf(wsi)) == peers_.end()) return 0;
      return StartHttpStream(wsi, ConnIdOf(wsi));
    }

    case LWS_CALLBACK_HTTP_WRITEABLE:
      if (ConnIdOf(wsi) == 0) return 0;
      return OnWritable(wsi, ConnIdOf(wsi));

    case LWS_CALLBACK_CLOSED_HTTP: {
      if (ConnIdOf(wsi) == 0) return 0;
      ConnId id = ConnIdOf(wsi);
      SetConnId(wsi, 0);
      auto it = peers_.find(id);
      if (it == peers_.end()) return 0;
      bool started = it->second.http_started;
      ErasePeer(id);
      if (started) hub_->OnClosed(id);
      MaybeNotifyEmpty();
      return 0;
    }

    default:
      return lws_callback_http_dummy(wsi, static_cast<lws_callback_reasons>(reason), pss, in, len);
  }
}

}  // namespace switchboard::gateway
