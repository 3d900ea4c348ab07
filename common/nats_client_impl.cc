#include "common/nats_client_impl.h"

#include <dlfcn.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace switchboard {
namespace {

constexpr size_t kMaxQueued = 100000;

absl::Status FromNats(natsStatus s, const std::string& what) {
  if (s == NATS_OK) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat(what, ": ", natsStatus_GetText(s)));
}

void OnDisconnected(natsConnection*, void*) { spdlog::warn("nats: disconnected"); }

// NATS.c hands every received message it frees to its garbage-collector
// thread and wakes that thread for it: one more wake-up (two context
// switches) per message, on the path of every fleet call (each gateway
// frees the request, control each answer). A received message starts with
// the library's GC item {next, freeCb}, freeCb being the exported
// natsMsg_free; with freeCb cleared, natsMsg_Destroy frees the message on
// the calling thread instead. Done only when that word really holds
// natsMsg_free's address (looked up at run time), so a library laid out
// otherwise just keeps its own way.
using FreeFn = void (*)(void*);
FreeFn LibraryMsgFree() {
  static const FreeFn fn = reinterpret_cast<FreeFn>(dlsym(RTLD_DEFAULT, "natsMsg_free"));
  return fn;
}

void DestroyHere(natsMsg* msg) {
  void** gc_item = reinterpret_cast<void**>(msg);
  const FreeFn fn = LibraryMsgFree();
  if (fn != nullptr && gc_item[1] == reinterpret_cast<void*>(fn)) gc_item[1] = nullptr;
  natsMsg_Destroy(msg);
}

// An epoll entry's tag: which attach (from 1; 0 is the wake-up) and socket.
uint64_t RxTag(uint64_t attach, int fd) { return (attach << 32) | static_cast<uint32_t>(fd); }

}  // namespace

bool NatsMessagesFreedInPlace() {
  if (nats_Open(-1) != NATS_OK) return false;
  natsMsg* msg = nullptr;
  if (natsMsg_Create(&msg, "probe", nullptr, "x", 1) != NATS_OK) return false;
  const FreeFn fn = LibraryMsgFree();
  const bool known = fn != nullptr && reinterpret_cast<void**>(msg)[1] == reinterpret_cast<void*>(fn);
  DestroyHere(msg);
  return known;
}

void NatsClientImpl::OnConnected(natsConnection*, void* closure) {
  spdlog::info("nats: connected");
  auto* self = static_cast<NatsClientImpl*>(closure);
  self->connected_since_ms_ = absl::ToUnixMillis(absl::Now());
  if (!self->connected_once_.HasBeenNotified()) self->connected_once_.Notify();
}

void NatsClientImpl::OnRxConnected(natsConnection*, void* closure) {
  spdlog::info("nats: receiving connection connected");
  auto* self = static_cast<NatsClientImpl*>(closure);
  if (!self->rx_.connected_once.HasBeenNotified()) self->rx_.connected_once.Notify();
  self->Subscribed();
}

void NatsClientImpl::OnLoopConnected(natsConnection*, void* closure) {
  spdlog::info("nats: event loop's receiving connection connected");
  auto* self = static_cast<NatsClientImpl*>(closure);
  if (self->loop_ && !self->loop_->connected_once.HasBeenNotified()) self->loop_->connected_once.Notify();
}

void NatsClientImpl::OnLoopReconnected(natsConnection*, void*) {
  spdlog::info("nats: event loop's receiving connection reconnected");
}

void NatsClientImpl::OnRxReconnected(natsConnection*, void* closure) {
  spdlog::info("nats: receiving connection reconnected");
  static_cast<NatsClientImpl*>(closure)->Subscribed();
}

// NATS.c sends the subscriptions again as it reconnects, before this runs.
void NatsClientImpl::Subscribed() {
  subscribed_session_.fetch_add(1);
  std::function<void()> fn;
  {
    absl::MutexLock lock(&on_subscribed_mu_);
    fn = on_subscribed_;
  }
  if (fn) fn();
}

bool NatsClientImpl::WaitForFirstConnection(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  if (!connected_once_.WaitForNotificationWithDeadline(deadline)) return false;
  if (!rx_.connected_once.WaitForNotificationWithDeadline(deadline)) return false;
  // Not the loop receiver: its loop may not run yet.
  for (natsConnection* nc : {conn_, rx_.conn}) {
    const int64_t left_ms = std::max<int64_t>(1, absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (natsConnection_FlushTimeout(nc, left_ms) != NATS_OK) return false;
  }
  return true;
}

void NatsClientImpl::OnReconnected(natsConnection*, void* closure) {
  spdlog::info("nats: reconnected");
  static_cast<NatsClientImpl*>(closure)->connected_since_ms_ = absl::ToUnixMillis(absl::Now());
}

absl::Time NatsClientImpl::ConnectedSince() const {
  if (!Connected()) return absl::InfiniteFuture();
  return absl::FromUnixMillis(connected_since_ms_.load());
}

absl::StatusOr<NatsClientImpl::OptsPtr> NatsClientImpl::MakeOptions(Receiver* receiver,
                                                                     natsConnectionHandler connected,
                                                                     natsConnectionHandler reconnected) {
  natsOptions* opts = nullptr;
  if (auto st = FromNats(natsOptions_Create(&opts), "nats options"); !st.ok()) return st;
  OptsPtr guard(opts, natsOptions_Destroy);
  natsStatus s = natsOptions_SetURL(opts, url_.c_str());
  if (s == NATS_OK) s = natsOptions_SetName(opts, (receiver != nullptr && receiver != &rx_ ? name_ + " loop" : name_).c_str());
  if (s == NATS_OK && !user_.empty()) s = natsOptions_SetUserInfo(opts, user_.c_str(), password_.c_str());
  if (s == NATS_OK && url_.rfind("tls://", 0) == 0) {
    s = natsOptions_SetSecure(opts, true);
    if (s == NATS_OK && !ca_file_.empty()) s = natsOptions_LoadCATrustedCertificates(opts, ca_file_.c_str());
  }
  if (s == NATS_OK) s = natsOptions_SetSendAsap(opts, true);
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(opts, -1);
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(opts, 250);
  if (s == NATS_OK) s = natsOptions_SetTimeout(opts, 2000);
  if (s == NATS_OK) s = natsOptions_SetAllowReconnect(opts, true);
  if (s == NATS_OK) s = natsOptions_SetRetryOnFailedConnect(opts, true, connected, this);
  if (s == NATS_OK) s = natsOptions_SetDisconnectedCB(opts, OnDisconnected, nullptr);
  if (s == NATS_OK) s = natsOptions_SetReconnectedCB(opts, reconnected, this);
  if (s == NATS_OK && receiver != nullptr) {
    s = natsOptions_SetEventLoop(opts, receiver, EvAttach, EvRead, EvWrite, EvDetach);
  }
  if (s != NATS_OK) {
    return absl::InvalidArgumentError(absl::StrCat("nats_url \"", url_, "\": ", natsStatus_GetText(s)));
  }
  return guard;
}

namespace {
// A receiver's epoll set; with `wakefd` >= 0, that descriptor in it as tag 0.
absl::Status MakePollSet(int* epfd, int wakefd) {
  *epfd = epoll_create1(EPOLL_CLOEXEC);
  if (*epfd < 0) return absl::InternalError(absl::StrCat("nats receive loop: ", std::strerror(errno)));
  if (wakefd < 0) return absl::OkStatus();
  epoll_event wake{};
  wake.events = EPOLLIN;
  wake.data.u64 = 0;
  if (epoll_ctl(*epfd, EPOLL_CTL_ADD, wakefd, &wake) != 0) {
    return absl::InternalError(absl::StrCat("nats receive loop: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

// Connects in the background if the server is not there yet; false only for
// an error a retry cannot mend.
absl::Status Connect(natsConnection** nc, natsOptions* opts, const std::string& url, bool* connected) {
  const natsStatus s = natsConnection_Connect(nc, opts);
  *connected = s == NATS_OK;
  if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED) {
    return absl::UnavailableError(absl::StrCat("nats connect ", url, ": ", natsStatus_GetText(s)));
  }
  return absl::OkStatus();
}
}  // namespace

absl::StatusOr<std::unique_ptr<NatsClientImpl>> NatsClientImpl::Create(const std::string& url,
                                                                      const std::string& name,
                                                                      const std::string& user,
                                                                      const std::string& password,
                                                                      const std::string& ca_file) {
  std::unique_ptr<NatsClientImpl> client(new NatsClientImpl());
  NatsClientImpl* self = client.get();
  self->url_ = url;
  self->name_ = name;
  self->user_ = user;
  self->password_ = password;
  self->ca_file_ = ca_file;
  self->rx_.client = self;
  auto opts = self->MakeOptions(nullptr, OnConnected, OnReconnected);
  if (!opts.ok()) return opts.status();
  auto rx_opts = self->MakeOptions(&self->rx_, OnRxConnected, OnRxReconnected);
  if (!rx_opts.ok()) return rx_opts.status();

  // The receiving connection's loop runs before it connects: the connect
  // attaches the socket, and confirmations (flushes) are read by the loop.
  self->wakefd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (self->wakefd_ < 0) return absl::InternalError(absl::StrCat("nats receive loop: ", std::strerror(errno)));
  if (auto st = MakePollSet(&self->rx_.epfd, self->wakefd_); !st.ok()) return st;
  self->rx_thread_ = std::thread([self] { self->RxLoop(); });

  bool up = false;
  if (auto st = Connect(&self->conn_, opts->get(), url, &up); !st.ok()) return st;
  if (up) {
    self->connected_since_ms_ = absl::ToUnixMillis(absl::Now());
    self->connected_once_.Notify();
  } else {
    spdlog::warn("nats: {} not reachable yet, retrying in background", url);
  }
  if (auto st = Connect(&self->rx_.conn, rx_opts->get(), url, &up); !st.ok()) return st;
  if (up) self->rx_.connected_once.Notify();
  self->sender_ = std::thread([self] { self->SendLoop(); });
  return client;
}

absl::Status NatsClientImpl::StartLoopReceiver() {
  if (loop_) return absl::FailedPreconditionError("nats: loop receiver started already");
  auto receiver = std::make_unique<Receiver>();
  receiver->client = this;
  if (auto st = MakePollSet(&receiver->epfd, -1); !st.ok()) return st;
  auto opts = MakeOptions(receiver.get(), OnLoopConnected, OnLoopReconnected);
  if (!opts.ok()) {
    close(receiver->epfd);
    return opts.status();
  }
  // Set before connecting: the connected callback may run at once.
  loop_ = std::move(receiver);
  bool up = false;
  if (auto st = Connect(&loop_->conn, opts->get(), url_, &up); !st.ok()) {
    if (loop_->conn != nullptr) natsConnection_Destroy(loop_->conn);
    close(loop_->epfd);
    loop_.reset();
    return st;
  }
  if (up && !loop_->connected_once.HasBeenNotified()) loop_->connected_once.Notify();
  return absl::OkStatus();
}

bool NatsClientImpl::LoopReceiverConnected() const {
  return loop_ && loop_->conn != nullptr && natsConnection_Status(loop_->conn) == NATS_CONN_STATUS_CONNECTED;
}

void NatsClientImpl::PumpLoopReceiver() {
  if (!loop_) return;
  epoll_event ready[4];
  const int n = epoll_wait(loop_->epfd, ready, 4, 0);
  loop_->Pump(ready, n > 0 ? n : 0);
}

absl::Status NatsClientImpl::SubscribeOnLoop(const std::string& subject, Handler handler) {
  if (!loop_) return absl::FailedPreconditionError("nats: no loop receiver");
  return loop_->Subscribe(&mu_, subject, std::move(handler));
}

void NatsClientImpl::Receiver::Close() {
  if (conn == nullptr) return;
  const int n = nsubs.load(std::memory_order_acquire);
  for (int i = 0; i < n; ++i) (void)natsSubscription_Unsubscribe(subs[i]->sub);
  natsConnection_Close(conn);
}

void NatsClientImpl::Receiver::Destroy() {
  const int n = nsubs.load(std::memory_order_acquire);
  for (int i = 0; i < n; ++i) natsSubscription_Destroy(subs[i]->sub);
  if (conn != nullptr) natsConnection_Destroy(conn);
  conn = nullptr;
  if (epfd >= 0) close(epfd);
  epfd = -1;
}

NatsClientImpl::~NatsClientImpl() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (sender_.joinable()) sender_.join();
  if (conn_ != nullptr) {
    if (Connected() && natsConnection_FlushTimeout(conn_, 1000) != NATS_OK) {
      spdlog::warn("nats: could not flush the last publishes at shutdown");
    }
  }
  // Handlers run only on the threads that pump their receivers: the
  // receive thread, ended below, and an outside loop, which has ended
  // before this client goes (they point into objects that go away after
  // this client).
  if (loop_) {
    loop_->Close();
    loop_->Destroy();
  }
  if (rx_.conn != nullptr) {
    // What an event loop published (PublishFromLoop) and the socket had not
    // taken yet goes out before the connection closes (the receive thread
    // still runs and writes it).
    if (natsConnection_Status(rx_.conn) == NATS_CONN_STATUS_CONNECTED &&
        natsConnection_FlushTimeout(rx_.conn, 1000) != NATS_OK) {
      spdlog::warn("nats: could not flush the last answers at shutdown");
    }
    rx_.Close();
  }
  if (rx_thread_.joinable()) {
    rx_stop_.store(true);
    const uint64_t one = 1;
    if (write(wakefd_, &one, sizeof(one)) < 0) spdlog::debug("nats: receive loop wake-up failed");
    rx_thread_.join();
  }
  rx_.Destroy();
  if (conn_ != nullptr) {
    natsConnection_Close(conn_);
    natsConnection_Destroy(conn_);
  }
  if (wakefd_ >= 0) close(wakefd_);
}

void NatsClientImpl::ShutdownLibrary() {
  if (nats_CloseAndWait(2000) != NATS_OK) spdlog::debug("nats: library threads still running at exit");
}

absl::Status NatsClientImpl::Publish(const std::string& subject, const std::string& data,
                                     const std::string& reply) {
  absl::MutexLock lock(&mu_);
  if (queue_.size() >= kMaxQueued) return absl::ResourceExhaustedError("nats publish queue full");
  queue_.push_back({subject, reply, data});
  return absl::OkStatus();
}

absl::Status NatsClientImpl::PublishNow(const std::string& subject, const std::string& data,
                                        const std::string& reply) {
  // NATS.c is thread-safe; with SendAsap this writes to the socket here (or
  // to its reconnect buffer while disconnected).
  const int len = static_cast<int>(data.size());
  natsStatus s = reply.empty() ? natsConnection_Publish(conn_, subject.c_str(), data.data(), len)
                               : natsConnection_PublishRequest(conn_, subject.c_str(), reply.c_str(), data.data(), len);
  if (s != NATS_OK) return FromNats(s, "nats publish " + subject);
  return absl::OkStatus();
}

namespace {
// Set while PublishFromLoop runs on this thread: NATS.c's request for write
// interest (made under its connection lock) is noted here instead of
// waking the receive thread, which is asked only if the write stays partial.
struct InlineWrite {
  const void* receiver = nullptr;
  bool wanted = false;
};
thread_local InlineWrite tl_inline;
}  // namespace

absl::Status NatsClientImpl::PublishFromLoop(const std::string& subject, const std::string& data) {
  if (rx_.conn == nullptr) return Publish(subject, data, "");
  tl_inline = {&rx_, false};
  const natsStatus s = natsConnection_Publish(rx_.conn, subject.c_str(), data.data(), static_cast<int>(data.size()));
  // Connected, and nothing of an earlier publish still waiting: written
  // here (non-blocking; NATS.c takes its connection lock).
  if (tl_inline.wanted) natsConnection_ProcessWriteEvent(rx_.conn);
  const bool leftover = tl_inline.wanted;
  tl_inline = {};
  if (leftover) rx_.SetEvents(EPOLLOUT, true);
  if (s != NATS_OK) return FromNats(s, "nats publish " + subject);
  return absl::OkStatus();
}

void NatsClientImpl::SendLoop() {
  for (;;) {
    std::deque<Outgoing> batch;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](NatsClientImpl* self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->mu_) {
            return self->stop_ || !self->queue_.empty();
          },
          this));
      batch.swap(queue_);
      // On stop, what was queued still goes out (e.g. a gateway's last
      // replies during its drain), then the loop ends.
      if (stop_ && batch.empty()) return;
    }
    for (const auto& m : batch) {
      const int len = static_cast<int>(m.data.size());
      natsStatus s = m.reply.empty()
                         ? natsConnection_Publish(conn_, m.subject.c_str(), m.data.data(), len)
                         : natsConnection_PublishRequest(conn_, m.subject.c_str(), m.reply.c_str(),
                                                         m.data.data(), len);
      if (s != NATS_OK) spdlog::warn("nats: publish to {} failed: {}", m.subject, natsStatus_GetText(s));
    }
  }
}

natsStatus NatsClientImpl::EvAttach(void** user, void* loop, natsConnection* nc, natsSock socket) {
  auto* r = static_cast<Receiver*>(loop);
  *user = r;
  r->nc.store(nc);
  absl::MutexLock lock(&r->ev_mu);
  // A reconnect brings a new socket; the old one is closed already, which
  // took it out of the epoll set.
  r->fd = socket;
  r->events = EPOLLIN;
  const uint64_t attach = r->attaches.load() + 1;
  r->attaches.store(attach);
  epoll_event ev{};
  ev.events = r->events;
  ev.data.u64 = RxTag(attach, socket);
  if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, socket, &ev) != 0 &&
      (errno != EEXIST || epoll_ctl(r->epfd, EPOLL_CTL_MOD, socket, &ev) != 0)) {
    spdlog::error("nats: cannot poll a receiving connection: {}", std::strerror(errno));
    return NATS_ERR;
  }
  return NATS_OK;
}

void NatsClientImpl::Receiver::SetEvents(uint32_t wanted, bool add) {
  absl::MutexLock lock(&ev_mu);
  const uint32_t next = add ? (events | wanted) : (events & ~wanted);
  const bool changed = next != events;
  events = next;
  if (!changed || fd < 0) return;
  epoll_event ev{};
  ev.events = next;
  ev.data.u64 = RxTag(attaches.load(), fd);
  if (epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev) != 0) {
    spdlog::debug("nats: receiving connection poll update: {}", std::strerror(errno));
  }
}

natsStatus NatsClientImpl::EvRead(void* user, bool add) {
  static_cast<Receiver*>(user)->SetEvents(EPOLLIN, add);
  return NATS_OK;
}

natsStatus NatsClientImpl::EvWrite(void* user, bool add) {
  auto* r = static_cast<Receiver*>(user);
  if (tl_inline.receiver == r) {
    tl_inline.wanted = add;
    if (add) return NATS_OK;
  }
  r->SetEvents(EPOLLOUT, add);
  return NATS_OK;
}

natsStatus NatsClientImpl::EvDetach(void* user) {
  auto* r = static_cast<Receiver*>(user);
  absl::MutexLock lock(&r->ev_mu);
  if (r->fd >= 0) (void)epoll_ctl(r->epfd, EPOLL_CTL_DEL, r->fd, nullptr);
  r->fd = -1;
  r->events = 0;
  return NATS_OK;
}

void NatsClientImpl::SetBusyPoll(absl::Duration window) { busy_window_ns_.store(absl::ToInt64Nanoseconds(window)); }

void NatsClientImpl::RxLoop() {
  epoll_event events[4];
  absl::Time last_message = absl::InfinitePast();
  while (!rx_stop_.load()) {
    int n = 0;
    for (;;) {
      const bool poll = awaiting_.load(std::memory_order_relaxed) > 0 &&
                        absl::Now() - last_message < absl::Nanoseconds(busy_window_ns_.load(std::memory_order_relaxed));
      n = epoll_wait(rx_.epfd, events, 4, poll ? 0 : -1);
      if (n != 0 || !poll) break;
      sched_yield();
    }
    // Only a client that may poll needs the time (not the gateways').
    if (n > 0 && busy_window_ns_.load(std::memory_order_relaxed) > 0) last_message = absl::Now();
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::error("nats: receive loop: {}", std::strerror(errno));
      return;
    }
    for (int i = 0; i < n; ++i) {
      if (events[i].data.u64 != 0) continue;  // the wake-up
      uint64_t count;
      while (read(wakefd_, &count, sizeof(count)) > 0) {
      }
    }
    rx_.Pump(events, n);
  }
}

void NatsClientImpl::Receiver::Pump(const epoll_event* ready, int n) {
  natsConnection* c = nc.load();
  for (int i = 0; i < n; ++i) {
    const uint64_t attach = ready[i].data.u64 >> 32;  // which socket; 0: a wake-up
    const int sock = static_cast<int>(ready[i].data.u64 & 0xffffffffu);
    if (attach == 0) continue;
    if (attach != attaches.load()) {
      // A socket the library has left (if not closed yet): out of the
      // set, unless its number is the current socket's already.
      absl::MutexLock lock(&ev_mu);
      if (sock != fd) (void)epoll_ctl(epfd, EPOLL_CTL_DEL, sock, nullptr);
      continue;
    }
    if (c == nullptr) continue;
    const uint32_t ev = ready[i].events;
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) natsConnection_ProcessReadEvent(c);
    if (ev & EPOLLOUT) natsConnection_ProcessWriteEvent(c);
    if (ev & (EPOLLERR | EPOLLHUP)) {
      // Broken. NATS.c 3.4 closes it as it starts reconnecting (which
      // takes it out of the set; a new socket is attached later); should
      // a library leave it open meanwhile, it would wake the pump without
      // end: out of the set. (tests: NatsOutageTest checks nobody is busy
      // while the bus is down.)
      absl::MutexLock lock(&ev_mu);
      if (attach == attaches.load() && fd >= 0) {
        (void)epoll_ctl(epfd, EPOLL_CTL_DEL, fd, nullptr);
        fd = -1;
        events = 0;
      }
    }
  }
  const int count = nsubs.load(std::memory_order_acquire);
  for (int i = 0; i < count; ++i) {
    Sub* sub = subs[i].get();
    for (;;) {
      natsMsg* msg = nullptr;
      const natsStatus s = natsSubscription_NextMsg(&msg, sub->sub, 0);
      if (s == NATS_SLOW_CONSUMER) {
        spdlog::warn("nats: messages dropped on {}: the handler fell behind", natsSubscription_GetSubject(sub->sub));
        continue;
      }
      if (s != NATS_OK) break;
      const char* reply = natsMsg_GetReply(msg);
      std::string data(natsMsg_GetData(msg), static_cast<size_t>(natsMsg_GetDataLength(msg)));
      sub->handler(natsMsg_GetSubject(msg), reply ? reply : "", data);
      DestroyHere(msg);
    }
  }
}

absl::Status NatsClientImpl::Receiver::Subscribe(absl::Mutex* mu, const std::string& subject, Handler handler) {
  absl::ReleasableMutexLock lock(mu);
  const int n = nsubs.load();
  if (n == kMaxSubs) return absl::ResourceExhaustedError("nats: too many subscriptions");
  auto sub = std::make_unique<Sub>();
  sub->handler = std::move(handler);
  natsStatus s = natsConnection_SubscribeSync(&sub->sub, conn, subject.c_str());
  if (s != NATS_OK) return FromNats(s, "nats subscribe " + subject);
  subs[n] = std::move(sub);
  nsubs.store(n + 1, std::memory_order_release);
  lock.Release();
  // A round trip, so the server has the subscription before the caller goes
  // on (a gateway attaches to control only after this: it must not be asked
  // before it can hear). Bounded; while disconnected the library resends it.
  // A receiver pumped by an outside loop that may not run yet cannot read
  // the server's answer: not waited for (what it hears tells its user).
  if (this == &client->rx_ && natsConnection_Status(conn) == NATS_CONN_STATUS_CONNECTED &&
      natsConnection_FlushTimeout(conn, 2000) != NATS_OK) {
    spdlog::warn("nats: subscription to {} not confirmed by the server yet", subject);
  }
  return absl::OkStatus();
}

absl::Status NatsClientImpl::Subscribe(const std::string& subject, Handler handler) {
  return rx_.Subscribe(&mu_, subject, std::move(handler));
}

bool NatsClientImpl::Connected() const {
  return natsConnection_Status(conn_) == NATS_CONN_STATUS_CONNECTED &&
         natsConnection_Status(rx_.conn) == NATS_CONN_STATUS_CONNECTED;
}

size_t NatsClientImpl::MaxPayload() const {
  const int64_t n = natsConnection_GetMaxPayload(conn_);
  return n > 0 ? static_cast<size_t>(n) : NatsClient::MaxPayload();
}

std::string NatsClientImpl::NewInbox() {
  natsInbox* inbox = nullptr;
  if (natsInbox_Create(&inbox) != NATS_OK) return "_INBOX.fallback";
  std::string out(inbox);
  natsInbox_Destroy(inbox);
  return out;
}

}  // namespace switchboard
