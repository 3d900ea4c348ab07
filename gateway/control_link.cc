#include "gateway/control_link.h"


#include <grpcpp/grpcpp.h>

#include "absl/random/random.h"
#include "absl/synchronization/notification.h"
#include "gateway/record_chunks.h"
#include "spdlog/spdlog.h"
#include "switchboard/v1/registry.grpc.pb.h"

namespace switchboard::gateway {
namespace {

constexpr absl::Duration kBatchInterval = absl::Milliseconds(20);
constexpr absl::Duration kMinBackoff = absl::Milliseconds(100);
constexpr absl::Duration kFailureLogEvery = absl::Seconds(30);
constexpr size_t kMaxBatch = 1000;
// Snapshot chunks and delta messages stay around this size (gRPC's default
// limit is 4 MiB per message).
constexpr size_t kMaxMessageBytes = 1 << 20;
constexpr int kClosedPerMessage = 10000;  // client IDs are at most 256 bytes
// Session changes queued for control before the link gives up on deltas.
constexpr size_t kMaxPending = 200000;

}  // namespace

ControlLink::ControlLink(std::string address, v1::GatewayHello hello, Dispatcher* loop,
                         SnapshotFn snapshot, Options options)
    : address_(std::move(address)),
      hello_(std::move(hello)),
      loop_(loop),
      snapshot_(std::move(snapshot)),
      options_(std::move(options)) {}

ControlLink::~ControlLink() { Stop(); }

void ControlLink::Start() { thread_ = std::thread([this] { Run(); }); }

void ControlLink::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    if (ctx_ != nullptr) ctx_->TryCancel();
  }
  if (thread_.joinable()) thread_.join();
}

// The delta queue is bounded. Nothing is queued while no stream is up (the
// next attach sends a snapshot anyway). If control falls behind by more than
// kMaxPending changes, the queue is dropped and the stream ended: the gateway
// re-attaches with a fresh snapshot instead of growing without limit.
void ControlLink::OnSessionOpened(const v1::SessionRecord& record) {
  absl::MutexLock lock(&mu_);
  if (!collecting_) return;
  if (Overflowing()) return;
  *pending_.add_opened() = record;
}

void ControlLink::OnSessionClosed(const std::string& client_id) {
  absl::MutexLock lock(&mu_);
  if (!collecting_) return;
  if (Overflowing()) return;
  pending_.add_closed_client_ids(client_id);
}

bool ControlLink::Overflowing() {
  if (overflow_) return true;
  if (static_cast<size_t>(pending_.opened_size() + pending_.closed_client_ids_size()) < kMaxPending) return false;
  spdlog::warn("control {}: {} session changes queued; dropping them and re-attaching with a snapshot", address_,
               kMaxPending);
  overflow_ = true;
  pending_.Clear();
  return true;
}

bool ControlLink::TakeSnapshot(std::vector<v1::SessionRecord>* out) {
  // The snapshot and the reset of pending deltas happen in one loop turn, so
  // every later delta is relative to this snapshot.
  // A dropped closure (loop queue full, shutdown) is a failed attempt.
  return RunOnLoop(loop_, [this] {
    auto sessions = snapshot_();
    absl::MutexLock lock(&mu_);
    pending_.Clear();
    overflow_ = false;
    collecting_ = true;  // every change after this snapshot is a delta
    return sessions;
  }, absl::Seconds(5), out);
}

void ControlLink::Run() {
  absl::BitGen rng;
  absl::Duration backoff = kMinBackoff;
  const absl::Duration max_backoff = MaxBackoff();
  for (;;) {
    absl::Time started = absl::Now();
    AttachOnce();
    absl::MutexLock lock(&mu_);
    if (stop_) return;
    if (absl::Now() - started > absl::Seconds(10)) backoff = kMinBackoff;  // it was a healthy stream
    absl::Duration wait = backoff * absl::Uniform(rng, 0.5, 1.0);
    backoff = std::min(backoff * 2, max_backoff);
    mu_.AwaitWithTimeout(absl::Condition(&stop_), wait);
    if (stop_) return;
  }
}

absl::Duration ControlLink::MaxBackoff() const {
  // A restarted control must see this gateway again within one lease (it
  // answers complete=false until then): never back off longer than a third.
  return std::max(kMinBackoff, options_.lease / 3);
}

void ControlLink::AttachOnce() {
  // Keepalive pings notice a control that froze or whose network went away
  // within about a lease, not after TCP's minutes.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, static_cast<int>(absl::ToInt64Milliseconds(options_.lease / 2)));
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, static_cast<int>(absl::ToInt64Milliseconds(options_.lease / 2)));
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // The address is one replica's IP; its certificate names the configured host.
  if (!options_.tls_name.empty()) args.SetSslTargetNameOverride(options_.tls_name);
  auto channel = grpc::CreateCustomChannel(
      address_, options_.credentials ? options_.credentials : grpc::InsecureChannelCredentials(), args);
  auto stub = v1::Registry::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.AddMetadata("x-switchboard-cluster-token", options_.cluster_token);
  {
    absl::MutexLock lock(&mu_);
    if (stop_) return;
    ctx_ = &ctx;
    broken_ = false;
  }
  auto stream = stub->Attach(&ctx);
  std::thread reader;
  v1::GatewayMessage hello;
  *hello.mutable_hello() = hello_;
  // The snapshot goes in chunks well under gRPC's 4 MiB message limit, so a
  // gateway with any number of sessions can attach.
  std::vector<v1::SessionRecord> sessions;
  bool ok = stream->Write(hello) && TakeSnapshot(&sessions);
  const size_t snapshot_size = sessions.size();
  if (ok) {
    auto chunks = ChunkRecords(std::move(sessions), kMaxMessageBytes);
    if (chunks.empty()) chunks.emplace_back();
    for (size_t i = 0; ok && i < chunks.size(); ++i) {
      v1::GatewayMessage snap;
      for (auto& r : chunks[i]) *snap.mutable_snapshot()->add_sessions() = std::move(r);
      snap.mutable_snapshot()->set_more(i + 1 < chunks.size());
      ok = stream->Write(snap);
    }
  }
  if (ok) {
    attached_ = true;
    attaches_.fetch_add(1, std::memory_order_relaxed);
    if (const int failed = failed_attempts_.exchange(0); failed > 0) {
      spdlog::info("control {}: attached after {} failed attempts, {} sessions in snapshot", address_, failed,
                   snapshot_size);
    } else {
      spdlog::info("control {}: attached, {} sessions in snapshot", address_, snapshot_size);
    }
    last_failure_logged_.clear();
    reader = std::thread([this, &stream] {
      v1::ControlMessage msg;
      while (stream->Read(&msg)) {
        if (msg.has_welcome() && options_.on_welcome) options_.on_welcome(msg.welcome());
      }
      absl::MutexLock lock(&mu_);
      broken_ = true;
    });
    absl::Time next_load = absl::Now() + options_.heartbeat;
    for (;;) {
      v1::GatewayMessage out;
      {
        absl::MutexLock lock(&mu_);
        auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return stop_ || broken_ || overflow_ || pending_.opened_size() > 0 || pending_.closed_client_ids_size() > 0;
        };
        mu_.AwaitWithDeadline(absl::Condition(&ready), next_load);
        if (stop_ || broken_ || overflow_) break;
        if (pending_.opened_size() + pending_.closed_client_ids_size() > 0) {
          // Let a burst accumulate into one message.
          if (pending_.opened_size() + pending_.closed_client_ids_size() < static_cast<int>(kMaxBatch)) {
            mu_.AwaitWithTimeout(absl::Condition(&stop_), kBatchInterval);
          }
          out.mutable_delta()->Swap(&pending_);
        }
      }
      if (!out.has_delta()) {
        if (absl::Now() < next_load) continue;
        next_load = absl::Now() + options_.heartbeat;
        if (options_.load) *out.mutable_load() = options_.load();
        else out.mutable_load();
        if (!stream->Write(out)) break;
        continue;
      }
      // Large deltas go in several messages, opens before closes.
      bool written = true;
      auto opened = std::vector<v1::SessionRecord>(std::make_move_iterator(out.mutable_delta()->mutable_opened()->begin()),
                                                   std::make_move_iterator(out.mutable_delta()->mutable_opened()->end()));
      for (auto& chunk : ChunkRecords(std::move(opened), kMaxMessageBytes)) {
        v1::GatewayMessage part;
        for (auto& r : chunk) *part.mutable_delta()->add_opened() = std::move(r);
        if (!(written = stream->Write(part))) break;
      }
      const auto& closed = out.delta().closed_client_ids();
      for (int i = 0; written && i < closed.size(); i += kClosedPerMessage) {
        v1::GatewayMessage part;
        for (int k = i; k < closed.size() && k < i + kClosedPerMessage; ++k) {
          part.mutable_delta()->add_closed_client_ids(closed[k]);
        }
        written = stream->Write(part);
      }
      if (!written) break;
    }
  }
  attached_ = false;
  bool ended_by_control = false;  // the reader saw the stream end: it is done
  {
    absl::MutexLock lock(&mu_);
    ended_by_control = broken_;
    ctx_ = nullptr;
    collecting_ = false;
    pending_.Clear();
  }
  // Otherwise the reader is still in Read: cancelling releases it. Not when
  // control ended the stream, so that Finish reports control's status and why
  // (a replica that is stopping says so).
  if (!ended_by_control) ctx.TryCancel();
  if (reader.joinable()) reader.join();
  grpc::Status st = stream->Finish();
  const std::string why = st.ok() ? "ok" : st.error_message();
  if (ok) {
    spdlog::info("control {}: detached: {}", address_, why);
  } else {
    LogFailedAttempt(why);
  }
}

void ControlLink::LogFailedAttempt(const std::string& why) {
  const int failed = failed_attempts_.fetch_add(1) + 1;
  const absl::Time now = absl::Now();
  if (failed > 1 && why == last_failure_logged_ && now - last_failure_log_ < kFailureLogEvery) return;
  if (failed == 1) {
    spdlog::info("control {}: cannot attach: {}", address_, why);
  } else {
    spdlog::warn("control {}: cannot attach ({} failed attempts in a row; retrying at most every {}): {}", address_,
                 failed, absl::FormatDuration(MaxBackoff()), why);
  }
  last_failure_logged_ = why;
  last_failure_log_ = now;
}

}  // namespace switchboard::gateway
