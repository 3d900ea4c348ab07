#include "common/nats_client_impl.h"

#include <dlfcn.h>

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

bool NatsClientImpl::WaitForFirstConnection(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  if (!connected_once_.WaitForNotificationWithDeadline(deadline)) return false;
  const int64_t left_ms = std::max<int64_t>(1, absl::ToInt64Milliseconds(deadline - absl::Now()));
  return natsConnection_FlushTimeout(conn_, left_ms) == NATS_OK;
}

void NatsClientImpl::OnReconnected(natsConnection*, void* closure) {
  spdlog::info("nats: reconnected");
  static_cast<NatsClientImpl*>(closure)->connected_since_ms_ = absl::ToUnixMillis(absl::Now());
}

absl::Time NatsClientImpl::ConnectedSince() const {
  if (!Connected()) return absl::InfiniteFuture();
  return absl::FromUnixMillis(connected_since_ms_.load());
}

absl::StatusOr<std::unique_ptr<NatsClientImpl>> NatsClientImpl::Create(const std::string& url,
                                                                      const std::string& name,
                                                                      const std::string& user,
                                                                      const std::string& password,
                                                                      const std::string& ca_file) {
  std::unique_ptr<NatsClientImpl> client(new NatsClientImpl());
  natsOptions* opts = nullptr;
  if (auto st = FromNats(natsOptions_Create(&opts), "nats options"); !st.ok()) return st;
  std::unique_ptr<natsOptions, void (*)(natsOptions*)> guard(opts, natsOptions_Destroy);
  natsStatus s = natsOptions_SetURL(opts, url.c_str());
  if (s == NATS_OK) s = natsOptions_SetName(opts, name.c_str());
  if (s == NATS_OK && !user.empty()) s = natsOptions_SetUserInfo(opts, user.c_str(), password.c_str());
  if (s == NATS_OK && url.rfind("tls://", 0) == 0) {
    s = natsOptions_SetSecure(opts, true);
    if (s == NATS_OK && !ca_file.empty()) s = natsOptions_LoadCATrustedCertificates(opts, ca_file.c_str());
  }
  if (s == NATS_OK) s = natsOptions_SetSendAsap(opts, true);
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(opts, -1);
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(opts, 250);
  if (s == NATS_OK) s = natsOptions_SetTimeout(opts, 2000);
  if (s == NATS_OK) s = natsOptions_SetAllowReconnect(opts, true);
  if (s == NATS_OK) s = natsOptions_SetRetryOnFailedConnect(opts, true, OnConnected, client.get());
  if (s == NATS_OK) s = natsOptions_SetDisconnectedCB(opts, OnDisconnected, nullptr);
  if (s == NATS_OK) s = natsOptions_SetReconnectedCB(opts, OnReconnected, client.get());
  if (s != NATS_OK) return absl::InvalidArgumentError(absl::StrCat("nats_url \"", url, "\": ", natsStatus_GetText(s)));

  s = natsConnection_Connect(&client->conn_, opts);
  if (s == NATS_OK) {
    client->connected_since_ms_ = absl::ToUnixMillis(absl::Now());
    client->connected_once_.Notify();
  }
  if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED) {
    return absl::UnavailableError(absl::StrCat("nats connect ", url, ": ", natsStatus_GetText(s)));
  }
  if (s == NATS_NOT_YET_CONNECTED) spdlog::warn("nats: {} not reachable yet, retrying in background", url);
  client->sender_ = std::thread([c = client.get()] { c->SendLoop(); });
  return client;
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
    std::vector<std::unique_ptr<Sub>> subs;
    {
      absl::MutexLock lock(&mu_);
      subs.swap(subs_);
    }
    // Stop deliveries and wait until no handler runs any more: handlers
    // point into objects that go away after this client.
    for (auto& sub : subs) {
      if (natsSubscription_Unsubscribe(sub->sub) != NATS_OK) {
        spdlog::debug("nats: unsubscribe at shutdown failed; waiting for the close instead");
      }
    }
    natsConnection_Close(conn_);
    for (auto& sub : subs) {
      if (!sub->complete.WaitForNotificationWithTimeout(absl::Seconds(5))) {
        spdlog::warn("nats: a subscription handler did not finish within 5 s of shutdown");
      }
      natsSubscription_Destroy(sub->sub);
    }
    natsConnection_Destroy(conn_);
  }
}

void NatsClientImpl::ShutdownLibrary() {
  if (nats_CloseAndWait(2000) != NATS_OK) spdlog::debug("nats: library threads still running at exit");
}

void NatsClientImpl::OnSubscriptionComplete(void* closure) {
  static_cast<Sub*>(closure)->complete.Notify();
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

void NatsClientImpl::OnMessage(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
  auto* sub = static_cast<Sub*>(closure);
  const char* reply = natsMsg_GetReply(msg);
  std::string data(natsMsg_GetData(msg), static_cast<size_t>(natsMsg_GetDataLength(msg)));
  sub->handler(natsMsg_GetSubject(msg), reply ? reply : "", data);
  DestroyHere(msg);
}

absl::Status NatsClientImpl::Subscribe(const std::string& subject, Handler handler) {
  auto sub = std::make_unique<Sub>();
  sub->handler = std::move(handler);
  natsStatus s = natsConnection_Subscribe(&sub->sub, conn_, subject.c_str(), OnMessage, sub.get());
  if (s != NATS_OK) return FromNats(s, "nats subscribe " + subject);
  s = natsSubscription_SetOnCompleteCB(sub->sub, OnSubscriptionComplete, sub.get());
  if (s != NATS_OK) {
    natsSubscription_Destroy(sub->sub);
    return FromNats(s, "nats subscribe " + subject);
  }
  // A round trip, so the server has the subscription before the caller goes
  // on (a gateway attaches to control only after this: it must not be asked
  // before it can hear). Bounded; while disconnected the library resends it.
  if (Connected() && natsConnection_FlushTimeout(conn_, 2000) != NATS_OK) {
    spdlog::warn("nats: subscription to {} not confirmed by the server yet", subject);
  }
  absl::MutexLock lock(&mu_);
  subs_.push_back(std::move(sub));
  return absl::OkStatus();
}

bool NatsClientImpl::Connected() const {
  return natsConnection_Status(conn_) == NATS_CONN_STATUS_CONNECTED;
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
