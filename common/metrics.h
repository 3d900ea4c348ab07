#pragma once

#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"

namespace switchboard {

// One process's Prometheus metrics (deploy/README.md, Metrics), served as
// text at GET /metrics on its operator listener, never the clients' port.
//
// Two kinds of source. What other threads count (gRPC handlers, the bus)
// goes through prometheus-cpp's registry: counters and histograms that are
// safe from any thread. What the event loop counts stays in plain integers
// on the loop (the hot path pays nothing): a collector copies them at scrape
// time (one trip to the loop) and builds its families here.
//
// Labels never carry what a client or caller chooses (user IDs, client IDs,
// client names, paths): only values from the code's own short lists (a
// reason, a close code the server sends, a method, a status) or the config's
// (app IDs): the number of series is bounded by the code and the config.
class Metrics {
 public:
  Metrics();
  prometheus::Registry& registry() { return *registry_; }

  // Appends the families it builds; called on the scraping thread.
  using Collector = std::function<void(std::vector<prometheus::MetricFamily>*)>;
  // Before the first scrape.
  void AddCollector(Collector collector);

  // The exposition text (format 0.0.4). Any thread.
  std::string Serialize() const;
  static constexpr char kContentType[] = "text/plain; version=0.0.4; charset=utf-8";

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  mutable absl::Mutex mu_;
  std::vector<Collector> collectors_ ABSL_GUARDED_BY(mu_);
};

// Builds a family at scrape time.
class FamilyBuilder {
 public:
  using Labels = std::vector<std::pair<std::string, std::string>>;
  FamilyBuilder(std::string name, std::string help, prometheus::MetricType type);
  FamilyBuilder& Add(double value, const Labels& labels = {});
  // A histogram sample set: upper bounds (ascending, without +Inf), the
  // count in each bucket (not cumulative; one more for +Inf), the sum.
  FamilyBuilder& AddHistogram(const std::vector<double>& bounds, const std::vector<uint64_t>& counts, double sum,
                              const Labels& labels = {});
  prometheus::MetricFamily Build() && { return std::move(family_); }

 private:
  prometheus::MetricFamily family_;
};

}  // namespace switchboard
