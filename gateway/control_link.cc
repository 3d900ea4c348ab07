#include "gateway/control_link.h"

#include <future>

#include <grpcpp/grpcpp.h>

#include "absl/random/random.h"
#include "spdlog/spdlog.h"
#include "switchboard/v1/registry.grpc.pb.h"

namespace switchboard::gateway {
namespace {

constexpr absl::Duration kBatchInterval = absl::Milliseconds(20);
constexpr absl::Duration kMinBackoff = absl::Milliseconds(100);
constexpr size_t kMaxBatch = 1000;

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

void ControlLink::OnSessionOpened(const v1::SessionRecord& record) {
  absl::MutexLock lock(&mu_);
  *pending_.add_opened() = record;
}

void ControlLink::OnSessionClosed(const std::string& client_id) {
  absl::MutexLock lock(&mu_);
  pending_.add_closed_client_ids(client_id);
}

bool ControlLink::TakeSnapshot(v1::SessionSnapshot* out) {
  // The snapshot and the reset of pending deltas happen in one loop turn, so
  // every later delta is relative to this snapshot.
  auto promise = std::make_shared<std::promise<std::vector<v1::SessionRecord>>>();
  auto future = promise->get_future();
  loop_->Post([this, promise] {
    auto sessions = snapshot_();
    {
      absl::MutexLock lock(&mu_);
      pending_.Clear();
    }
    promise->set_value(std::move(sessions));
  });
  if (future.wait_for(std::chrono::seconds(5)) != std::future_status::ready) return false;
  for (auto& s : future.get()) *out->add_sessions() = std::move(s);
  return true;
}

void ControlLink::Run() {
  absl::BitGen rng;
  absl::Duration backoff = kMinBackoff;
  // A restarted control must see this gateway again within one lease (it
  // answers complete=false until then): never back off longer than a third.
  const absl::Duration max_backoff = std::max(kMinBackoff, options_.lease / 3);
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

void ControlLink::AttachOnce() {
  // Keepalive pings notice a control that froze or whose network went away
  // within about a lease, not after TCP's minutes.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, static_cast<int>(absl::ToInt64Milliseconds(options_.lease / 2)));
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, static_cast<int>(absl::ToInt64Milliseconds(options_.lease / 2)));
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  auto channel = grpc::CreateCustomChannel(address_, grpc::InsecureChannelCredentials(), args);
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
  v1::GatewayMessage snap;
  bool ok = stream->Write(hello) && TakeSnapshot(snap.mutable_snapshot()) && stream->Write(snap);
  if (ok) {
    attached_ = true;
    spdlog::info("control {}: attached, {} sessions in snapshot", address_, snap.snapshot().sessions_size());
    reader = std::thread([this, &stream] {
      v1::ControlMessage msg;
      while (stream->Read(&msg)) {
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
          return stop_ || broken_ || pending_.opened_size() > 0 || pending_.closed_client_ids_size() > 0;
        };
        mu_.AwaitWithDeadline(absl::Condition(&ready), next_load);
        if (stop_ || broken_) break;
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
        out.mutable_load();  // a heartbeat; counts are filled by control from deltas
      }
      if (!stream->Write(out)) break;
    }
  }
  attached_ = false;
  {
    absl::MutexLock lock(&mu_);
    ctx_ = nullptr;
  }
  ctx.TryCancel();
  if (reader.joinable()) reader.join();
  grpc::Status st = stream->Finish();
  spdlog::info("control {}: detached: {}", address_, st.ok() ? "ok" : st.error_message());
}

}  // namespace switchboard::gateway
