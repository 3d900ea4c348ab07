#include "gateway/control_link_set.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

#include "spdlog/spdlog.h"

namespace switchboard::gateway {

ControlLinkSet::ControlLinkSet(std::vector<std::string> configured, std::unique_ptr<ControlResolver> resolver,
                               absl::Duration interval, LinkFactory factory)
    : configured_(std::move(configured)),
      resolver_(std::move(resolver)),
      interval_(interval),
      factory_(std::move(factory)) {}

ControlLinkSet::~ControlLinkSet() { Stop(); }

void ControlLinkSet::Start() {
  thread_ = std::thread([this] {
    do {
      Refresh();
    } while (!stop_.WaitForNotificationWithTimeout(interval_));
  });
}

void ControlLinkSet::Stop() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (thread_.joinable()) thread_.join();
  std::map<std::string, std::shared_ptr<ControlLink>> links;
  {
    absl::MutexLock lock(&mu_);
    links.swap(links_);
    PublishLinks();
  }
  for (auto& [address, link] : links) link->Stop();
}

void ControlLinkSet::Refresh() {
  std::map<std::string, std::string> want;  // replica address -> configured host
  bool failed = false;
  for (const auto& entry : configured_) {
    auto addresses = resolver_->Resolve(entry, absl::Seconds(2));
    if (!addresses.ok()) {
      spdlog::warn("control {}: {}; keeping the current links", entry, std::string(addresses.status().message()));
      failed = true;
      continue;
    }
    std::string host = entry.substr(0, entry.rfind(':'));
    if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
    for (const auto& a : *addresses) want.emplace(a, host);
  }
  std::vector<std::shared_ptr<ControlLink>> gone;
  std::vector<std::string> added;
  {
    absl::MutexLock lock(&mu_);
    for (auto it = links_.begin(); it != links_.end();) {
      // A lookup that failed says nothing about its replicas: only drop on success.
      if (!failed && want.count(it->first) == 0) {
        attaches_of_gone_ += it->second->attaches();
        gone.push_back(it->second);
        it = links_.erase(it);
      } else {
        ++it;
      }
    }
    for (const auto& [address, host] : want) {
      if (links_.count(address) == 0) added.push_back(address);
    }
    if (!gone.empty()) PublishLinks();
  }
  for (auto& link : gone) link->Stop();
  for (const auto& address : added) {
    spdlog::info("control replica {}: linking", address);
    std::shared_ptr<ControlLink> link = factory_(address, want[address]);
    link->Start();
    absl::MutexLock lock(&mu_);
    links_[address] = std::move(link);
    PublishLinks();
  }
}

std::vector<std::string> ControlLinkSet::Addresses() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> out;
  for (const auto& [address, link] : links_) out.push_back(address);
  return out;
}

void ControlLinkSet::PublishLinks() {
  auto list = std::make_shared<LinkList>();
  list->reserve(links_.size());
  for (const auto& [address, link] : links_) list->push_back(link);
  published_ = std::move(list);
}

std::shared_ptr<const ControlLinkSet::LinkList> ControlLinkSet::Links() const {
  absl::MutexLock lock(&mu_);
  return published_;
}

void ControlLinkSet::OnSessionOpened(const v1::SessionRecord& record) {
  for (const auto& link : *Links()) link->OnSessionOpened(record);
}

void ControlLinkSet::OnSessionClosed(const std::string& client_id) {
  for (const auto& link : *Links()) link->OnSessionClosed(client_id);
}

ControlLinkSet::Counts ControlLinkSet::counts() const {
  absl::MutexLock lock(&mu_);
  Counts c;
  c.replicas = links_.size();
  c.attaches = attaches_of_gone_;
  for (const auto& [address, link] : links_) {
    c.attached += link->attached() ? 1 : 0;
    c.attaches += link->attaches();
  }
  return c;
}

std::string ControlLinkSet::NoneAttached() const {
  absl::MutexLock lock(&mu_);
  if (links_.empty()) return "no control replica found";
  std::vector<std::string> addresses;
  for (const auto& [address, link] : links_) {
    if (link->attached()) return "";
    addresses.push_back(address);
  }
  return absl::StrCat("not attached to any control replica (0 of ", links_.size(), ": ", absl::StrJoin(addresses, ", "),
                      ")");
}

}  // namespace switchboard::gateway
