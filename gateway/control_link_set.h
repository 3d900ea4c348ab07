#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gateway/control_link.h"
#include "gateway/control_resolver.h"
#include "gateway/transport.h"

namespace switchboard::gateway {

// Keeps this gateway attached to every control replica: each configured
// address is resolved to all its replicas (a Kubernetes headless Service
// name, or a static list of host:port), re-resolved every `interval`, with a
// ControlLink per replica; new replicas get a link (which attaches with a
// full snapshot), gone ones lose theirs. A failed lookup keeps what there is.
// Session events (loop thread) fan out to every link. Thread-safe.
class ControlLinkSet final : public SessionObserver {
 public:
  // `address` is one replica ("ip:port"); `host` the configured name it was
  // found under (what a TLS certificate names).
  using LinkFactory = std::function<std::unique_ptr<ControlLink>(const std::string& address, const std::string& host)>;
  ControlLinkSet(std::vector<std::string> configured, std::unique_ptr<ControlResolver> resolver,
                 absl::Duration interval, LinkFactory factory);
  ~ControlLinkSet() override;

  // Resolves once, attaches, and keeps re-resolving on its own thread.
  void Start();
  // Stops re-resolving and detaches from every replica.
  void Stop();
  // The replica addresses currently linked, sorted.
  std::vector<std::string> Addresses() const;
  // "" when attached to at least one replica; otherwise why not. Any thread.
  std::string NoneAttached() const;
  // For the metrics: replicas known, attached now, and attaches since start
  // (links to replicas gone included).
  struct Counts {
    size_t replicas = 0;
    size_t attached = 0;
    uint64_t attaches = 0;
  };
  Counts counts() const;

  void OnSessionOpened(const v1::SessionRecord& record) override;
  void OnSessionClosed(const std::string& client_id) override;

 private:
  void Refresh();
  using LinkList = std::vector<std::shared_ptr<ControlLink>>;
  // The current links, rebuilt when they change (rarely) so a session event
  // (every connect, on the loop) only takes a reference, never a copy.
  std::shared_ptr<const LinkList> Links() const;
  void PublishLinks() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::vector<std::string> configured_;
  std::unique_ptr<ControlResolver> resolver_;  // resolver thread only
  const absl::Duration interval_;
  LinkFactory factory_;
  absl::Notification stop_;
  std::thread thread_;
  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<ControlLink>> links_ ABSL_GUARDED_BY(mu_);
  uint64_t attaches_of_gone_ ABSL_GUARDED_BY(mu_) = 0;
  std::shared_ptr<const LinkList> published_ ABSL_GUARDED_BY(mu_) = std::make_shared<LinkList>();
};

}  // namespace switchboard::gateway
