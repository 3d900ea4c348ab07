#pragma once

#include <array>
#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/node_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/dispatcher.h"
#include "gateway/admission.h"
#include "gateway/hub.h"
#include "gateway/proxy_protocol.h"
#include "gateway/timer_wheel.h"
#include "gateway/transport.h"

struct lws;
struct lws_context;
struct lws_sorted_usec_list;

namespace switchboard::gateway {

// The only code that touches libwebsockets. Owns the event loop (libuv), every
// `lws*` and every outbox. Post() is the one thread-safe door; everything else
// runs on the loop thread, inside Run().
class WsServer final : public Transport, public Dispatcher {
 public:
  struct Options {
    std::string host = "127.0.0.1";
    int port = 0;  // 0: the OS chooses; see port()
    size_t max_message_bytes = 65536;
    size_t outbox_limit = 256;
    size_t max_connections = 18000;
    size_t max_connections_per_ip = 0;  // 0: no cap
    // New connections per second from one address, and from all of them
    // together (the ceiling); 0: no limit.
    double connect_rate_limit = 0;
    double connect_rate_limit_total = 0;
    absl::Duration connect_timeout = absl::Seconds(10);  // uni_http_stream: the whole body by then
    std::string tls_cert_file;  // set: wss:// and https:// only
    std::string tls_key_file;
    // How often the certificate and key files are looked at: when either
    // changed (a renewal: cert-manager, a Secret update), the pair is read,
    // checked (key matches, not expired) and used for new handshakes; the
    // connections already open keep theirs. 0: never.
    absl::Duration tls_reload_check = absl::Seconds(10);
    // Sockets open at once, upgraded or not (a connected socket that never
    // sends a request holds a descriptor as much as a session does): beyond
    // this, or beyond max_connections_per_ip from one address, a new socket
    // is closed as it is accepted. 0: max_connections + 256.
    size_t max_sockets = 0;
    // Listen with SO_REUSEPORT (lws 4.1 sets it only with several service
    // threads), so several gateway processes share one port and the kernel
    // spreads connections over them.
    bool reuse_port = false;
    // Real client addresses behind load balancers: connections from these
    // addresses or CIDRs are a proxy's; with proxy_protocol each starts with
    // a PROXY header (v1 or v2), whose client is the connection's; an HTTP
    // request from them may name its client in X-Forwarded-For (the
    // rightmost entry not itself trusted). From anyone else both are
    // ignored (a PROXY header is then just a bad request).
    std::vector<std::string> trusted_proxies;
    bool proxy_protocol = false;
  };
  static absl::StatusOr<std::unique_ptr<WsServer>> Create(const Options& options);
  ~WsServer() override;

  void set_hub(Hub* hub) { hub_ = hub; }
  // What GET /readyz answers: "" ready (200), otherwise why not (503).
  // Called on the loop: must be quick and thread-safe. Set before Run().
  void set_readiness(std::function<std::string()> readiness) { readiness_ = std::move(readiness); }
  // Turns unready at once (GET /readyz 503 "draining") while still serving:
  // the start of a drain. Any thread.
  void BeginDrain() { draining_ = true; }
  int port() const { return port_; }

  // Runs the loop until Shutdown().
  void Run();
  // Refuse new WebSocket upgrades (drain). Loop thread.
  void StopAccepting();
  // Calls `fn` (on the loop) once no connection is left, at once if none is.
  // Loop thread.
  void NotifyWhenEmpty(std::function<void()> fn);
  // Ends the loop: Run() returns, later Post()s are dropped. Call once every
  // connection has closed. Loop thread.
  void Shutdown();

  // Transport (loop thread).
  bool Send(ConnId conn, std::string frame, bool binary) override;
  void Close(ConnId conn, int code, const std::string& reason) override;
  void ArmTimer(ConnId conn, absl::Duration after) override;
  void NotifyWhenWritten(ConnId conn) override;

  // Dispatcher (any thread).
  bool Post(std::function<void()> fn) override;
  // A copy of `fd` adopted by lws as a raw file. `on_ready` runs as a batch
  // of posted tasks does: the frames it sends are written after it.
  bool Watch(int fd, std::function<void()> on_ready) override;
  uint64_t posts_dropped() const { return posts_dropped_.load(); }

  size_t connection_count() const { return peers_.size(); }
  uint64_t refused() const { return refused_; }
  // Sockets open now (accepted, not yet destroyed), and those closed as they
  // were accepted (caps, or no descriptor left). Loop thread.
  size_t open_sockets() const { return admission_.open_sockets(); }
  uint64_t shed() const { return shed_; }
  // Any thread.
  bool draining() const { return draining_.load(); }

  // What the loop counts for the metrics (plain integers: the hot path pays
  // an increment). Loop thread; a scrape copies them there.
  struct Counters {
    uint64_t messages_in = 0;  // whole messages from clients
    uint64_t bytes_in = 0;     // their payload bytes
    uint64_t messages_out = 0;  // messages (stream lines) handed to clients
    uint64_t bytes_out = 0;
    uint64_t client_closes = 0;  // close handshakes the client started
    uint64_t outbox_full_closes = 0;  // slow consumers: closed with 3008
    // Closes the server started, by the code it sent (its own short list).
    absl::flat_hash_map<int, uint64_t> closes_by_code;
    // How late the loop ran its timer tick (the loop's lag), in seconds.
    struct Histogram {
      static constexpr std::array<double, 10> kBounds{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1};
      std::array<uint64_t, kBounds.size() + 1> counts{};  // the last: above every bound
      double sum = 0;
      void Observe(double v) {
        size_t i = 0;
        while (i < kBounds.size() && v > kBounds[i]) ++i;
        ++counts[i];
        sum += v;
      }
    } loop_lag;
  };
  const Counters& counters() const { return counters_; }
  const Admission& admission() const { return admission_; }

 private:
  struct Peer {
    lws* wsi = nullptr;
    struct Frame {
      std::string buf;  // LWS_PRE bytes of headroom, then the payload
      bool binary;
    };
    // A FIFO that holds no memory while empty, which is nearly always for an
    // idle connection (libstdc++'s std::deque allocates ~576 B even empty):
    // one pointer until a frame waits.
    struct Outbox {
      struct Queue {
        std::vector<Frame> frames;
        size_t head = 0;
      };
      std::unique_ptr<Queue> q;
      bool empty() const { return !q || q->head == q->frames.size(); }
      size_t size() const { return q ? q->frames.size() - q->head : 0; }
      void clear() { q.reset(); }  // frames not yet handed to lws: none is half written
      Frame& front() { return q->frames[q->head]; }
      void push_back(Frame f) {
        if (!q) q = std::make_unique<Queue>();
        q->frames.push_back(std::move(f));
      }
      void pop_front() {
        if (++q->head == q->frames.size()) {
          q.reset();  // give the memory back
        } else if (q->head >= 64 && q->head * 2 >= q->frames.size()) {
          q->frames.erase(q->frames.begin(), q->frames.begin() + static_cast<std::ptrdiff_t>(q->head));
          q->head = 0;
        }
      }
    };
    // A message arriving in pieces (lws hands over at most its rx buffer at a
    // time): one pointer while nothing is being assembled.
    struct RxBuffer {
      std::unique_ptr<std::string> s;
      size_t size() const { return s ? s->size() : 0; }
      void clear() { s.reset(); }
      void append(const char* data, size_t len) {
        if (!s) s = std::make_unique<std::string>();
        s->append(data, len);
      }
      void assign(size_t n, char c) { s = std::make_unique<std::string>(n, c); }
      // Hands the bytes over (`out` gets them, the buffer is left empty).
      void swap(std::string& out) {
        if (s) out.swap(*s); else out.clear();
        s.reset();
      }
    };
    // 48 bytes with wsi (the small fields together at the end).
    Outbox outbox;
    RxBuffer rx;
    std::unique_ptr<std::string> close_reason;  // set once closing
    Admission::Key ip = nullptr;  // the socket's count (it stays put)
    uint32_t timer_stamp = 0;  // the wheel's (TimerWheel::StampOf)
    uint16_t close_code = 1000;
    // Bits, all false at first (C++17: no initializers on bit-fields).
    bool rx_oversized : 1;
    bool closing : 1;
    bool close_sent : 1;
    // uni_http_stream: an HTTP response streamed in chunks instead of frames.
    bool http_stream : 1;
    bool http_started : 1;  // the POST body is in and the hub has the connection
    bool notify_written : 1;  // tell the hub once the outbox is empty
    bool write_deferred : 1;  // in deferred_: its outbox is written after the posted batch
    Peer()
        : rx_oversized(false),
          closing(false),
          close_sent(false),
          http_stream(false),
          http_started(false),
          notify_written(false),
          write_deferred(false) {}
  };
  explicit WsServer(const Options& options);
  static int Callback(lws* wsi, int reason, void* user, void* in, size_t len);
  int HandleEvent(lws* wsi, int reason, ConnId* pss, void* in, size_t len);
  int OnWritable(lws* wsi, ConnId id);
  int OnHttpStreamWritable(lws* wsi, Peer& peer);
  // Starts the chunked response of a uni_http_stream once its body is in.
  int StartHttpStream(lws* wsi, ConnId id);
  static ConnectionMeta PeerMeta(lws* wsi, const std::string& client_ip);
  // The client's address for a request (the socket's peer, or what a
  // trusted proxy says), the socket counted for it (loop thread).
  const std::string& ClientIp(lws* wsi);
  void RunPosted();
  // A watched descriptor is readable: its on_ready run. False: not one.
  bool RunWatched(lws* wsi);
  struct Watched;
  std::vector<std::unique_ptr<Watched>> watched_;  // loop thread; closed in Shutdown
  // Writes the outboxes of the connections whose frames a posted task sent
  // (deferred_), after the whole batch.
  void WriteDeferred();
  // Hands the connections whose outbox has drained to lws's own close
  // handshake (see ws_server.cc for why this runs outside their callbacks).
  void StartCloseHandshakes();
  // The wheel's one lws timer: advance it, fire what is due, schedule the next.
  static void OnTick(::lws_sorted_usec_list* sul);
  void Tick();
  Peer& AddPeer(ConnId id, lws* wsi);
  void ErasePeer(ConnId id);
  void MaybeNotifyEmpty();

  Options options_;
  lws_context* context_ = nullptr;
  int port_ = 0;
  Hub* hub_ = nullptr;
  std::function<std::string()> readiness_;
  ConnId next_id_ = 1;
  absl::node_hash_map<ConnId, Peer> peers_;  // node: exact-size entries, no slack of Peer-sized slots
  // Who gets in (gateway/admission.h): open sockets by client address, from
  // accept to close; peers and not-yet-upgraded sockets keep their key.
  Admission admission_;
  Counters counters_;
  CidrSet trusted_;
  // The vhost's OpenSSL SSL_CTX (lws hands it over while creating the
  // vhost), the certificate files' last seen state, the next look.
  void* tls_ctx_ = nullptr;
  std::string tls_files_seen_;
  absl::Time next_tls_check_ = absl::InfinitePast();
  void CheckTlsFiles(absl::Time now);
 public:
  // Certificates loaded since start (reloads), and refused (unreadable,
  // mismatched, expired). Loop thread.
  uint64_t tls_reloads() const { return tls_reloads_; }
  uint64_t tls_reload_failures() const { return tls_reload_failures_; }
 private:
  uint64_t tls_reloads_ = 0;
  uint64_t tls_reload_failures_ = 0;
  // Every connection's deadline (TimerWheel), ticked by one lws timer.
  // Stamps kept in the peer records (no map of its own).
  TimerWheel wheel_{absl::Milliseconds(10), 4096, absl::Now(), [this](ConnId id) -> uint32_t* {
                      auto it = peers_.find(id);
                      return it == peers_.end() ? nullptr : &it->second.timer_stamp;
                    }};
  struct TickTimer;
  std::unique_ptr<TickTimer> tick_timer_;
  absl::Time tick_at_ = absl::InfinitePast();  // when the tick timer fires next
  bool in_tick_ = false;
  void ArmAt(ConnId id, absl::Time when);
  void ScheduleTick(absl::Time at);
  // The listening socket is ours (SO_REUSEPORT with Options::reuse_port),
  // watched by lws as a raw file; accepted sockets are counted (per address)
  // and handed to lws. Loop thread.
  // Marks the close frame as under way and has the next cancel event start
  // lws's close handshake for it. Loop thread.
  void QueueCloseHandshake(Peer& peer, ConnId id);
  lws* listen_wsi_ = nullptr;
  int listen_fd_ = -1;
  absl::Status StartListener();
  void StopListener();
  void Accept();
  // Closes a socket as it is accepted, counted; logs at most every 10 s.
  void Shed(int fd, const char* why);
  uint64_t shed_ = 0;
  uint64_t shed_unlogged_ = 0;
  absl::Time shed_logged_ = absl::InfinitePast();
  // Held open so that accept() can always take one socket to close it when
  // the process is out of descriptors (EMFILE), instead of leaving it in the
  // backlog where the listener stays readable and the loop spins.
  int reserve_fd_ = -1;
  std::atomic<bool> draining_{false};
  uint64_t refused_ = 0;
  bool shut_down_ = false;
  // The thread inside Run(); loop-only entry points check they are on it.
  std::atomic<std::thread::id> loop_thread_{};
  void AssertOnLoop(const char* what) const;
  std::function<void()> on_empty_;
  std::vector<ConnId> ready_to_close_;  // outbox flushed, close frame not yet handed to lws
  // While posted tasks run (bus commands), frames that would be written at
  // once wait in their outbox until the batch is done: the commands' answers
  // leave first (their path to the caller is the call's latency), the
  // frames a moment later, in the same loop turn.
  bool deferring_writes_ = false;
  std::vector<ConnId> deferred_;

  absl::Mutex post_mu_;
  std::vector<std::function<void()>> posted_ ABSL_GUARDED_BY(post_mu_);
  bool post_closed_ ABSL_GUARDED_BY(post_mu_) = false;
  std::atomic<uint64_t> posts_dropped_{0};
};

}  // namespace switchboard::gateway
