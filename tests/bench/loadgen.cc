// switchboard-loadgen: many Centrifugo-protocol WebSocket sessions from one
// single-threaded epoll loop, for benchmarks and the suite's smoke run.
//
//   switchboard-loadgen --targets 127.0.0.1:8000 --sources 127.0.0.1-127.0.0.8
//       --sessions 10000 --secret S --users 1000 [--concurrency 200] [--rate R]
//       [--hold SECONDS] [--churn PER_S] [--log-closes] [--report SECONDS]
//
// Each session: TCP connect (from the next source address, the port chosen at
// connect time), HTTP upgrade, `{"id":1,"connect":{"token":...}}` with an
// HS256 JWT for user <prefix><i % users>, then it answers server pings (`{}`
// lines and WebSocket pings) until the end. `--mode raw` counts any reply to
// the first message as connected (for a plain lws reference server).
//
// Output, one JSON object per line on stdout:
//   {"event":"bucket",...}  every 1,000 sessions connected (rate of that bucket)
//   {"event":"ready",...}   once every session has connected or failed
//   {"event":"close",...}   with --log-closes, each close the server started;
//                           t_us is when the wait that found the frame
//                           readable returned (wall clock), so the
//                           generator's own work on the other sockets of
//                           that batch (its close replies, close(2), these
//                           lines) is not counted against the server
//   {"event":"status",...}  every --report seconds
//   {"event":"done",...}    at exit (after --hold, SIGTERM/SIGINT or stdin EOF
//                           with --stdin)
// Exit status 0 unless the arguments were wrong.
//
// Threading: one thread; nothing here is shared.

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jwt.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_split.h"

ABSL_FLAG(std::string, targets, "127.0.0.1:8000", "gateway host:port list, comma separated (round robin)");
ABSL_FLAG(std::string, sources, "127.0.0.1",
          "source addresses, comma separated; a.b.c.x-a.b.c.y is a range (round robin)");
ABSL_FLAG(std::string, path, "/connection/websocket", "upgrade path");
ABSL_FLAG(std::string, mode, "centrifuge", "centrifuge | raw (any reply to the first message counts)");
ABSL_FLAG(int, sessions, 1000, "sessions to open");
ABSL_FLAG(int, concurrency, 200, "handshakes in flight at most");
ABSL_FLAG(double, rate, 0, "connects per second at most (0: as fast as the concurrency allows)");
ABSL_FLAG(std::string, secret, "", "HS256 secret of the app (centrifuge mode)");
ABSL_FLAG(int, users, 100, "distinct users; session i is user <user_prefix><i % users>");
ABSL_FLAG(std::string, user_prefix, "u", "user ID prefix");
ABSL_FLAG(int, token_ttl, 0, "token lifetime in seconds (0: no exp claim)");
ABSL_FLAG(double, hold, 0, "seconds to stay once ready (0: until SIGTERM, or stdin EOF with --stdin)");
ABSL_FLAG(bool, stdin, false, "exit when stdin closes");
ABSL_FLAG(double, churn, 0, "after ready: close this many sessions per second and open new ones");
ABSL_FLAG(bool, log_closes, false, "print every close the server starts");
ABSL_FLAG(double, report, 0, "print a status line every this many seconds (0: never)");
ABSL_FLAG(int, slow, 0, "the sessions numbered below this stop reading once open (slow readers)");
ABSL_FLAG(int, retries, 0, "open a session that failed to connect again, up to this many times");
ABSL_FLAG(double, handshake_timeout, 30, "seconds before an unanswered connect counts as failed");
ABSL_FLAG(bool, tls, false, "wss://: TLS to every target, the server's certificate verified");
ABSL_FLAG(std::string, ca_file, "", "with --tls: the CA that signed the server's certificate (default: the system's)");
ABSL_FLAG(std::string, tls_name, "localhost", "with --tls: the name the certificate must carry (SNI too)");

namespace {

volatile sig_atomic_t g_stop = 0;

int64_t NowUs(clockid_t clock) {
  timespec ts;
  clock_gettime(clock, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}
int64_t MonoUs() { return NowUs(CLOCK_MONOTONIC); }

enum class State { kTcp, kTls, kUpgrade, kConnecting, kOpen, kClosed };

struct Conn {
  int fd = -1;
  SSL* ssl = nullptr;  // --tls
  int index = 0;  // session number (user = index % users)
  int attempt = 0;  // retries so far (--retries)
  State state = State::kTcp;
  int64_t started_us = 0;
  std::string in;   // bytes read and not yet parsed
  std::string out;  // bytes not yet written
  std::string message;  // fragmented message being assembled
  bool want_out = false;
  bool closing = false;  // we sent a close frame (churn)
  bool stopped = false;  // --slow: no longer reads
  size_t open_pos = 0;   // index in LoadGen::open_ while open
};

struct Target {
  sockaddr_in addr{};
};

bool ParseHostPort(const std::string& s, sockaddr_in* out) {
  std::vector<std::string> parts = absl::StrSplit(s, ':');
  int port = 0;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[1], &port) || port <= 0 || port > 65535) return false;
  out->sin_family = AF_INET;
  out->sin_port = htons(static_cast<uint16_t>(port));
  return inet_pton(AF_INET, parts[0].c_str(), &out->sin_addr) == 1;
}

bool ParseSources(const std::string& s, std::vector<in_addr>* out) {
  for (absl::string_view item : absl::StrSplit(s, ',', absl::SkipEmpty())) {
    std::vector<std::string> range = absl::StrSplit(item, '-');
    in_addr first{}, last{};
    if (inet_pton(AF_INET, range[0].c_str(), &first) != 1) return false;
    last = first;
    if (range.size() == 2 && inet_pton(AF_INET, range[1].c_str(), &last) != 1) return false;
    if (range.size() > 2) return false;
    for (uint32_t a = ntohl(first.s_addr); a <= ntohl(last.s_addr); ++a) {
      in_addr x{};
      x.s_addr = htonl(a);
      out->push_back(x);
    }
  }
  return !out->empty();
}

std::string MakeToken(const std::string& user, const std::string& secret, int ttl) {
  jwt_t* jwt = nullptr;
  if (jwt_new(&jwt) != 0) return "";
  jwt_add_grant(jwt, "sub", user.c_str());
  if (ttl > 0) jwt_add_grant_int(jwt, "exp", time(nullptr) + ttl);
  jwt_set_alg(jwt, JWT_ALG_HS256, reinterpret_cast<const unsigned char*>(secret.data()),
              static_cast<int>(secret.size()));
  char* s = jwt_encode_str(jwt);
  std::string token = s ? s : "";
  free(s);
  jwt_free(jwt);
  return token;
}

class LoadGen {
 public:
  bool Init() {
    if (!ParseSources(absl::GetFlag(FLAGS_sources), &sources_)) return Usage("bad --sources");
    for (absl::string_view t : absl::StrSplit(absl::GetFlag(FLAGS_targets), ',', absl::SkipEmpty())) {
      Target target;
      if (!ParseHostPort(std::string(t), &target.addr)) return Usage("bad --targets entry " + std::string(t));
      targets_.push_back(target);
    }
    if (targets_.empty()) return Usage("no --targets");
    sessions_ = absl::GetFlag(FLAGS_sessions);
    users_ = std::max(1, absl::GetFlag(FLAGS_users));
    raw_ = absl::GetFlag(FLAGS_mode) == "raw";
    if (!raw_ && absl::GetFlag(FLAGS_mode) != "centrifuge") return Usage("bad --mode");
    if (!raw_ && absl::GetFlag(FLAGS_secret).empty()) return Usage("--secret is required in centrifuge mode");
    const int n_tokens = std::min(users_, sessions_ + 1);
    for (int u = 0; u < n_tokens; ++u) {
      std::string token = raw_ ? "x" : MakeToken(User(u), absl::GetFlag(FLAGS_secret), absl::GetFlag(FLAGS_token_ttl));
      if (token.empty()) return Usage("cannot sign a token");
      connect_frames_.push_back(
          Frame(1, absl::StrCat("{\"id\":1,\"connect\":{\"token\":\"", token, "\",\"name\":\"loadgen\"}}")));
    }
    rlimit rl{};
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if (static_cast<rlim_t>(sessions_) + 16 > rl.rlim_cur) {
      return Usage(absl::StrCat("--sessions ", sessions_, " exceeds this process's descriptor limit ", rl.rlim_cur,
                                ": run several load generators"));
    }
    if (absl::GetFlag(FLAGS_tls)) {
      tls_ = SSL_CTX_new(TLS_client_method());
      if (tls_ == nullptr) return Usage("cannot make a TLS context");
      SSL_CTX_set_verify(tls_, SSL_VERIFY_PEER, nullptr);
      const std::string ca = absl::GetFlag(FLAGS_ca_file);
      if (ca.empty() ? SSL_CTX_set_default_verify_paths(tls_) != 1
                     : SSL_CTX_load_verify_locations(tls_, ca.c_str(), nullptr) != 1) {
        return Usage("cannot load the CA " + ca);
      }
      SSL_CTX_set_mode(tls_, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
      SSL_CTX_set_alpn_protos(tls_, reinterpret_cast<const unsigned char*>("\x08http/1.1"), 9);
    }
    epfd_ = epoll_create1(EPOLL_CLOEXEC);
    return epfd_ >= 0;
  }

  void Run() {
    const double hold = absl::GetFlag(FLAGS_hold);
    const double report = absl::GetFlag(FLAGS_report);
    const double churn = absl::GetFlag(FLAGS_churn);
    const double rate = absl::GetFlag(FLAGS_rate);
    const int concurrency = std::max(1, absl::GetFlag(FLAGS_concurrency));
    const int64_t handshake_timeout_us = static_cast<int64_t>(absl::GetFlag(FLAGS_handshake_timeout) * 1e6);
    t0_us_ = MonoUs();
    bucket_start_us_ = t0_us_;
    int64_t next_report_us = report > 0 ? t0_us_ + static_cast<int64_t>(report * 1e6) : INT64_MAX;
    int64_t last_tick_us = t0_us_;
    double open_credit = 0, churn_credit = 0;
    std::vector<epoll_event> events(1024);
    if (absl::GetFlag(FLAGS_stdin)) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = UINT64_MAX;
      epoll_ctl(epfd_, EPOLL_CTL_ADD, 0, &ev);
    }
    while (!g_stop) {
      const int64_t now = MonoUs();
      const double dt = (now - last_tick_us) / 1e6;
      last_tick_us = now;
      // Open new sessions within the concurrency and rate limits.
      open_credit = rate > 0 ? std::min(open_credit + dt * rate, std::max(1.0, rate / 10)) : 1e9;
      while (started_ < sessions_ && in_flight_ < concurrency && open_credit >= 1) {
        Open(started_++);
        open_credit -= 1;
      }
      if (ready_us_ != 0 && churn > 0) {
        churn_credit += dt * churn;
        while (churn_credit >= 1 && !open_.empty() && in_flight_ < concurrency) {
          churn_credit -= 1;
          Churn();
        }
      }
      if (!ready_printed_ && connected_ + failed_ >= sessions_) PrintReady();
      if (ready_us_ != 0 && hold > 0 && now - ready_us_ >= static_cast<int64_t>(hold * 1e6)) break;
      if (now >= next_report_us) {
        PrintStatus("status");
        next_report_us += static_cast<int64_t>(report * 1e6);
      }
      ExpireHandshakes(now, handshake_timeout_us);
      const int n = epoll_wait(epfd_, events.data(), static_cast<int>(events.size()), 5);
      batch_realtime_us_ = NowUs(CLOCK_REALTIME);
      for (int i = 0; i < n; ++i) {
        // epoll_event is packed: copy the fields out before using them.
        const uint64_t id = events[i].data.u64;
        const uint32_t what = events[i].events;
        if (id == UINT64_MAX) {
          char buf[256];
          if (read(0, buf, sizeof(buf)) <= 0) g_stop = 1;
          continue;
        }
        auto it = conns_.find(id);
        if (it == conns_.end()) continue;
        Conn* c = it->second.get();
        if (what & (EPOLLERR | EPOLLHUP) && c->state == State::kTcp) {
          Fail(c, "connect");
          continue;
        }
        if (what & EPOLLOUT) OnWritable(c);
        if (c->fd >= 0 && (what & (EPOLLIN | EPOLLHUP | EPOLLERR))) OnReadable(c);
      }
      graveyard_.clear();  // dropped connections, kept until nothing points at them
    }
    if (!ready_printed_) PrintReady();
    PrintStatus("done");
  }

 private:
  bool Usage(const std::string& why) {
    fprintf(stderr, "switchboard-loadgen: %s\n", why.c_str());
    return false;
  }

  std::string User(int u) const { return absl::StrCat(absl::GetFlag(FLAGS_user_prefix), u); }

  // A client frame: FIN, opcode, masked (the mask only needs to be there).
  std::string Frame(int opcode, const std::string& payload) {
    std::string f;
    f.push_back(static_cast<char>(0x80 | opcode));
    const size_t n = payload.size();
    if (n < 126) {
      f.push_back(static_cast<char>(0x80 | n));
    } else if (n < 65536) {
      f.push_back(static_cast<char>(0x80 | 126));
      f.push_back(static_cast<char>(n >> 8));
      f.push_back(static_cast<char>(n & 0xff));
    } else {
      f.push_back(static_cast<char>(0x80 | 127));
      for (int i = 7; i >= 0; --i) f.push_back(static_cast<char>((static_cast<uint64_t>(n) >> (8 * i)) & 0xff));
    }
    const uint32_t key = static_cast<uint32_t>(rng_());
    char mask[4];
    std::memcpy(mask, &key, 4);
    f.append(mask, 4);
    for (size_t i = 0; i < n; ++i) f.push_back(static_cast<char>(payload[i] ^ mask[i % 4]));
    return f;
  }

  void Open(int index, int attempt = 0) {
    auto conn = std::make_unique<Conn>();
    Conn* c = conn.get();
    c->index = index;
    c->attempt = attempt;
    c->started_us = MonoUs();
    ++in_flight_;
    const uint64_t id = next_id_++;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
      conns_[id] = std::move(conn);
      id_of_[c] = id;
      Fail(c, "socket");
      return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
    sockaddr_in src{};
    src.sin_family = AF_INET;
    src.sin_addr = sources_[source_rr_++ % sources_.size()];
    const Target& target = targets_[target_rr_++ % targets_.size()];
    conns_[id] = std::move(conn);
    id_of_[c] = id;
    if (bind(c->fd, reinterpret_cast<sockaddr*>(&src), sizeof(src)) != 0) {
      Fail(c, "bind");
      return;
    }
    int rc = connect(c->fd, reinterpret_cast<const sockaddr*>(&target.addr), sizeof(target.addr));
    if (rc != 0 && errno != EINPROGRESS) {
      Fail(c, "connect");
      return;
    }
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT;
    ev.data.u64 = id;
    c->want_out = true;
    epoll_ctl(epfd_, EPOLL_CTL_ADD, c->fd, &ev);
    char host[64];
    inet_ntop(AF_INET, &target.addr.sin_addr, host, sizeof(host));
    c->out = absl::StrCat("GET ", absl::GetFlag(FLAGS_path), " HTTP/1.1\r\nHost: ", host, ":",
                          ntohs(target.addr.sin_port),
                          "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
  }

  void SetWantOut(Conn* c, bool want) {
    if (c->want_out == want || c->fd < 0) return;
    c->want_out = want;
    epoll_event ev{};
    ev.events = (c->stopped ? 0u : static_cast<uint32_t>(EPOLLIN)) | (want ? static_cast<uint32_t>(EPOLLOUT) : 0u);
    ev.data.u64 = id_of_[c];
    epoll_ctl(epfd_, EPOLL_CTL_MOD, c->fd, &ev);
  }

  void Send(Conn* c, const std::string& bytes) {
    c->out += bytes;
    OnWritable(c);
  }

  void OnWritable(Conn* c) {
    if (c->fd < 0) return;
    if (c->state == State::kTcp) {
      int err = 0;
      socklen_t len = sizeof(err);
      getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        Fail(c, "connect");
        return;
      }
      c->state = State::kUpgrade;
      if (tls_ != nullptr) {
        c->ssl = SSL_new(tls_);
        const std::string name = absl::GetFlag(FLAGS_tls_name);
        if (c->ssl == nullptr || SSL_set_fd(c->ssl, c->fd) != 1 || SSL_set_tlsext_host_name(c->ssl, name.c_str()) != 1 ||
            SSL_set1_host(c->ssl, name.c_str()) != 1) {
          Fail(c, "tls");
          return;
        }
        SSL_set_connect_state(c->ssl);
        c->state = State::kTls;
      }
    }
    if (c->state == State::kTls && !Handshake(c)) return;
    while (!c->out.empty()) {
      ssize_t n;
      if (c->ssl != nullptr) {
        const int w = SSL_write(c->ssl, c->out.data(), static_cast<int>(std::min<size_t>(c->out.size(), 1 << 20)));
        if (w <= 0) {
          const int e = SSL_get_error(c->ssl, w);
          if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) break;
          ERR_clear_error();
          Lost(c, -1);
          return;
        }
        n = w;
      } else {
        n = send(c->fd, c->out.data(), c->out.size(), MSG_NOSIGNAL);
        if (n < 0) {
          if (errno == EAGAIN || errno == EINTR) break;
          Lost(c, -1);
          return;
        }
      }
      c->out.erase(0, static_cast<size_t>(n));
    }
    SetWantOut(c, !c->out.empty());
  }

  // Drives the TLS handshake; true once it is done (the upgrade request,
  // already queued, then goes out). Failing verification fails the session.
  bool Handshake(Conn* c) {
    const int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
      c->state = State::kUpgrade;
      return true;
    }
    const int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
      SetWantOut(c, false);
      return false;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
      SetWantOut(c, true);
      return false;
    }
    const long verify = SSL_get_verify_result(c->ssl);
    ERR_clear_error();
    Fail(c, verify != X509_V_OK ? std::string("tls verify: ") + X509_verify_cert_error_string(verify)
                                : std::string("tls handshake"));
    return false;
  }

  void OnReadable(Conn* c) {
    char buf[16384];
    if (c->state == State::kTcp) {
      OnWritable(c);  // the connect's outcome first
      if (c->fd < 0 || c->state == State::kTcp) return;
    }
    if (c->state == State::kTls) {
      if (!Handshake(c)) return;
      OnWritable(c);
      if (c->fd < 0) return;
    }
    if (c->ssl != nullptr) {
      for (;;) {
        const int n = SSL_read(c->ssl, buf, sizeof(buf));
        if (n > 0) {
          c->in.append(buf, static_cast<size_t>(n));
          continue;
        }
        const int e = SSL_get_error(c->ssl, n);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) break;
        ERR_clear_error();
        Lost(c, -1);  // reset or EOF without a close frame
        return;
      }
      Parse(c);
      return;
    }
    for (;;) {
      ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
      if (n > 0) {
        c->in.append(buf, static_cast<size_t>(n));
        if (static_cast<size_t>(n) < sizeof(buf)) break;
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
      Lost(c, -1);  // reset or EOF without a close frame
      return;
    }
    Parse(c);
  }

  void Parse(Conn* c) {
    if (c->state == State::kUpgrade) {
      size_t end = c->in.find("\r\n\r\n");
      if (end == std::string::npos) return;
      if (c->in.compare(0, 12, "HTTP/1.1 101") != 0) {
        Fail(c, "http " + c->in.substr(9, 3));
        return;
      }
      c->in.erase(0, end + 4);
      c->state = State::kConnecting;
      Send(c, raw_ ? Frame(1, "{\"id\":1,\"connect\":{}}") : connect_frames_[c->index % connect_frames_.size()]);
      if (c->fd < 0) return;
    }
    size_t pos = 0;
    while (c->fd >= 0) {
      const size_t avail = c->in.size() - pos;
      if (avail < 2) break;
      const uint8_t b0 = static_cast<uint8_t>(c->in[pos]), b1 = static_cast<uint8_t>(c->in[pos + 1]);
      uint64_t len = b1 & 0x7f;
      size_t header = 2;
      if (len == 126) {
        if (avail < 4) break;
        len = (static_cast<uint8_t>(c->in[pos + 2]) << 8) | static_cast<uint8_t>(c->in[pos + 3]);
        header = 4;
      } else if (len == 127) {
        if (avail < 10) break;
        len = 0;
        for (int i = 0; i < 8; ++i) len = (len << 8) | static_cast<uint8_t>(c->in[pos + 2 + i]);
        header = 10;
      }
      if (avail < header + len) break;
      const std::string payload = c->in.substr(pos + header, len);
      pos += header + len;
      const int opcode = b0 & 0x0f;
      const bool fin = b0 & 0x80;
      if (opcode == 0x8) {
        int code = payload.size() >= 2 ? (static_cast<uint8_t>(payload[0]) << 8) | static_cast<uint8_t>(payload[1])
                                       : 1005;
        if (!c->closing) Send(c, Frame(0x8, payload.substr(0, 2)));
        Lost(c, code);
        return;
      } else if (opcode == 0x9) {
        Send(c, Frame(0xA, payload));
      } else if (opcode == 0x1 || opcode == 0x2 || opcode == 0x0) {
        c->message += payload;
        if (fin) {
          std::string m;
          m.swap(c->message);
          OnMessage(c, m);
        }
      }
    }
    if (c->fd >= 0) c->in.erase(0, pos);
  }

  void OnMessage(Conn* c, const std::string& m) {
    for (absl::string_view line : absl::StrSplit(m, '\n', absl::SkipEmpty())) {
      if (line == "{}") {
        ++pings_;
        Send(c, Frame(1, "{}"));
        if (c->fd < 0) return;
        continue;
      }
      if (c->state == State::kOpen && line.find("\"push\"") != absl::string_view::npos) {
        OnPush(c, line);
        continue;
      }
      if (c->state != State::kConnecting) continue;
      if (raw_ || (line.find("\"id\":1") != absl::string_view::npos &&
                   line.find("\"connect\"") != absl::string_view::npos)) {
        Connected(c);
      } else if (line.find("\"id\":1") != absl::string_view::npos) {
        Fail(c, "connect error");
        return;
      }
    }
  }

  // A publication (SendToUser) whose data carries "t" (the sender's
  // CLOCK_MONOTONIC in us when it called) and "s" (its sequence number):
  // counted, timed from call to arrival at this socket, and checked for
  // duplicates per session.
  void OnPush(Conn* c, absl::string_view line) {
    ++pushes_;
    auto field = [&](absl::string_view key, int64_t* out) {
      const size_t at = line.find(key);
      if (at == absl::string_view::npos) return false;
      return absl::SimpleAtoi(line.substr(at + key.size(), line.find_first_not_of("0123456789", at + key.size()) -
                                                                (at + key.size())),
                              out);
    };
    int64_t t = 0, seq = 0;
    if (field("\"t\":", &t)) push_latency_us_.push_back(MonoUs() - t);
    if (field("\"s\":", &seq) && !pushes_seen_.insert({c->index, seq}).second) ++push_dups_;
  }

  void Connected(Conn* c) {
    c->state = State::kOpen;
    if (c->index < absl::GetFlag(FLAGS_slow)) {
      // A slow reader: what the server sends piles up in the socket
      // buffers, then in the server's outbox.
      c->stopped = true;
      epoll_event ev{};
      ev.events = c->want_out ? static_cast<uint32_t>(EPOLLOUT) : 0u;
      ev.data.u64 = id_of_[c];
      epoll_ctl(epfd_, EPOLL_CTL_MOD, c->fd, &ev);
    }
    --in_flight_;
    ++connected_;
    c->open_pos = open_.size();
    open_.push_back(c);
    connect_latency_us_.push_back(MonoUs() - c->started_us);
    if (!ready_printed_ && connected_ % 1000 == 0) {
      const int64_t now = MonoUs();
      const double secs = (now - bucket_start_us_) / 1e6;
      const double r = 1000 / std::max(secs, 1e-6);
      buckets_.push_back(r);
      printf("{\"event\":\"bucket\",\"connected\":%d,\"ms\":%.1f,\"rate\":%.0f}\n", connected_, secs * 1000, r);
      fflush(stdout);
      bucket_start_us_ = now;
    }
  }

  void ExpireHandshakes(int64_t now, int64_t timeout_us) {
    if (in_flight_ == 0 || now - last_expire_scan_us_ < 1000000) return;
    last_expire_scan_us_ = now;
    std::vector<Conn*> late;
    for (auto& [id, conn] : conns_) {
      if (conn && (conn->state == State::kTcp || conn->state == State::kUpgrade || conn->state == State::kConnecting) &&
          now - conn->started_us > timeout_us) {
        late.push_back(conn.get());
      }
    }
    for (Conn* c : late) Fail(c, "timeout");
  }

  // A handshake that did not end in a session.
  void Fail(Conn* c, const std::string& why) {
    if (c->attempt < absl::GetFlag(FLAGS_retries)) {
      const int index = c->index, attempt = c->attempt + 1;
      ++retried_;
      --in_flight_;
      Drop(c);
      Open(index, attempt);
      return;
    }
    ++failed_;
    ++fail_reasons_[why];
    --in_flight_;
    Drop(c);
  }

  // A session (or handshake) the server or the network ended: code is the
  // close frame's code, -1 without one.
  void Lost(Conn* c, int code) {
    if (c->state != State::kOpen) {
      if (c->closing) {
        Drop(c);
        return;
      }
      Fail(c, code < 0 ? "reset" : absl::StrCat("close ", code));
      return;
    }
    if (!c->closing) {
      ++closes_[code];
      if (absl::GetFlag(FLAGS_log_closes)) {
        printf("{\"event\":\"close\",\"user\":\"%s\",\"code\":%d,\"t_us\":%lld}\n", User(c->index % users_).c_str(),
               code, static_cast<long long>(batch_realtime_us_));
        fflush(stdout);
      }
    }
    RemoveOpen(c);
    Drop(c);
  }

  void RemoveOpen(Conn* c) {
    Conn* last = open_.back();
    open_[c->open_pos] = last;
    last->open_pos = c->open_pos;
    open_.pop_back();
  }

  void Drop(Conn* c) {
    if (c->ssl != nullptr) {
      SSL_free(c->ssl);
      c->ssl = nullptr;
    }
    if (c->fd >= 0) {
      epoll_ctl(epfd_, EPOLL_CTL_DEL, c->fd, nullptr);
      close(c->fd);
      c->fd = -1;
    }
    c->state = State::kClosed;
    auto it = id_of_.find(c);
    if (it != id_of_.end()) {
      const uint64_t id = it->second;
      id_of_.erase(it);
      auto cit = conns_.find(id);
      if (cit != conns_.end()) {
        // Callers up the stack may still look at c (c->fd < 0 tells them it
        // is gone): freed after this loop turn.
        graveyard_.push_back(std::move(cit->second));
        conns_.erase(cit);
      }
    }
  }

  // Closes one random open session (close frame 1000, socket closed at once)
  // and opens a new one with the same user.
  void Churn() {
    std::uniform_int_distribution<size_t> pick(0, open_.size() - 1);
    Conn* c = open_[pick(rng_)];
    RemoveOpen(c);
    c->closing = true;
    std::string payload("\x03\xe8", 2);
    c->out += Frame(0x8, payload);
    OnWritable(c);
    const int index = c->index;
    --connected_;
    Drop(c);
    ++churned_;
    Open(index);
  }

  void PrintReady() {
    ready_printed_ = true;
    ready_us_ = MonoUs();
    const double secs = (ready_us_ - t0_us_) / 1e6;
    std::vector<int64_t> lat = connect_latency_us_;
    std::sort(lat.begin(), lat.end());
    auto pct = [&](double p) { return lat.empty() ? 0.0 : lat[static_cast<size_t>(p * (lat.size() - 1))] / 1000.0; };
    std::string reasons;
    for (const auto& [why, n] : fail_reasons_) absl::StrAppend(&reasons, reasons.empty() ? "" : ",", "\"", why, "\":", n);
    printf("{\"event\":\"ready\",\"connected\":%d,\"failed\":%d,\"ms\":%.0f,\"rate_overall\":%.0f,"
           "\"rate_first\":%.0f,\"rate_last\":%.0f,\"connect_p50_ms\":%.2f,\"connect_p99_ms\":%.2f,"
           "\"retried\":%lld,\"fail_reasons\":{%s}}\n",
           connected_, failed_, secs * 1000, connected_ / std::max(secs, 1e-6),
           buckets_.empty() ? 0.0 : buckets_.front(), buckets_.empty() ? 0.0 : buckets_.back(), pct(0.5), pct(0.99),
           static_cast<long long>(retried_), reasons.c_str());
    fflush(stdout);
    connect_latency_us_.clear();
  }

  void PrintStatus(const char* event) {
    std::string codes;
    for (const auto& [code, n] : closes_) absl::StrAppend(&codes, codes.empty() ? "" : ",", "\"", code, "\":", n);
    std::vector<int64_t> lat = connect_latency_us_;
    std::sort(lat.begin(), lat.end());
    auto pct = [&](double p) { return lat.empty() ? 0.0 : lat[static_cast<size_t>(p * (lat.size() - 1))] / 1000.0; };
    std::vector<int64_t> push = push_latency_us_;
    std::sort(push.begin(), push.end());
    auto ppct = [&](double p) { return push.empty() ? 0.0 : push[static_cast<size_t>(p * (push.size() - 1))] / 1000.0; };
    // The same latencies as counts per 100 us (the last: 50 ms and above),
    // so that bench.py can merge generators into one distribution.
    std::string hist;
    if (!push.empty()) {
      std::vector<int64_t> counts(kPushBuckets + 1, 0);
      for (int64_t us : push) ++counts[static_cast<size_t>(std::clamp<int64_t>(us / 100, 0, kPushBuckets))];
      hist = ",\"push_hist_100us\":[";
      for (size_t i = 0; i < counts.size(); ++i) absl::StrAppend(&hist, i ? "," : "", counts[i]);
      hist += "]";
    }
    printf("{\"event\":\"%s\",\"open\":%zu,\"connected\":%d,\"failed\":%d,\"churned\":%lld,\"pings\":%lld,"
           "\"closed_by_server\":{%s},\"reconnect_p50_ms\":%.2f,\"reconnect_p99_ms\":%.2f,\"pushes\":%lld,"
           "\"push_duplicates\":%lld,\"push_p50_ms\":%.3f,\"push_p99_ms\":%.3f,\"push_max_ms\":%.3f%s}\n",
           event, open_.size(), connected_, failed_, static_cast<long long>(churned_), static_cast<long long>(pings_),
           codes.c_str(), pct(0.5), pct(0.99), static_cast<long long>(pushes_), static_cast<long long>(push_dups_),
           ppct(0.5), ppct(0.99), ppct(1.0), hist.c_str());
    fflush(stdout);
  }

  std::vector<in_addr> sources_;
  std::vector<Target> targets_;
  std::vector<std::string> connect_frames_;  // per user
  int sessions_ = 0, users_ = 1;
  bool raw_ = false;
  int epfd_ = -1;
  SSL_CTX* tls_ = nullptr;  // --tls
  std::mt19937_64 rng_{42};
  size_t source_rr_ = 0, target_rr_ = 0;
  uint64_t next_id_ = 0;
  std::map<uint64_t, std::unique_ptr<Conn>> conns_;
  std::map<Conn*, uint64_t> id_of_;
  std::vector<std::unique_ptr<Conn>> graveyard_;
  std::vector<Conn*> open_;
  int64_t batch_realtime_us_ = 0;  // when the current epoll batch's wait returned
  int started_ = 0, in_flight_ = 0, connected_ = 0, failed_ = 0;
  int64_t churned_ = 0, pings_ = 0, retried_ = 0;
  int64_t pushes_ = 0, push_dups_ = 0;
  std::vector<int64_t> push_latency_us_;
  static constexpr int64_t kPushBuckets = 500;
  absl::flat_hash_set<std::pair<int, int64_t>> pushes_seen_;
  std::map<std::string, int> fail_reasons_;
  std::map<int, int> closes_;
  std::vector<double> buckets_;
  std::vector<int64_t> connect_latency_us_;
  int64_t t0_us_ = 0, bucket_start_us_ = 0, ready_us_ = 0, last_expire_scan_us_ = 0;
  bool ready_printed_ = false;
};

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Opens many Centrifugo WebSocket sessions for benchmarks");
  absl::ParseCommandLine(argc, argv);
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa {};
  sa.sa_handler = [](int) { g_stop = 1; };
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  LoadGen gen;
  if (!gen.Init()) return 2;
  gen.Run();
  return 0;
}
