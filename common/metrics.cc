#include "common/metrics.h"

#include "prometheus/text_serializer.h"

namespace switchboard {

Metrics::Metrics() : registry_(std::make_shared<prometheus::Registry>()) {}

void Metrics::AddCollector(Collector collector) {
  absl::MutexLock lock(&mu_);
  collectors_.push_back(std::move(collector));
}

std::string Metrics::Serialize() const {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  {
    absl::MutexLock lock(&mu_);
    for (const Collector& c : collectors_) c(&families);
  }
  return prometheus::TextSerializer().Serialize(families);
}

FamilyBuilder::FamilyBuilder(std::string name, std::string help, prometheus::MetricType type) {
  family_.name = std::move(name);
  family_.help = std::move(help);
  family_.type = type;
}

namespace {
std::vector<prometheus::ClientMetric::Label> ToLabels(const FamilyBuilder::Labels& labels) {
  std::vector<prometheus::ClientMetric::Label> out;
  out.reserve(labels.size());
  for (const auto& [k, v] : labels) out.push_back({k, v});
  return out;
}
}  // namespace

FamilyBuilder& FamilyBuilder::Add(double value, const Labels& labels) {
  prometheus::ClientMetric m;
  m.label = ToLabels(labels);
  if (family_.type == prometheus::MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  family_.metric.push_back(std::move(m));
  return *this;
}

FamilyBuilder& FamilyBuilder::AddHistogram(const std::vector<double>& bounds, const std::vector<uint64_t>& counts,
                                           double sum, const Labels& labels) {
  prometheus::ClientMetric m;
  m.label = ToLabels(labels);
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= bounds.size(); ++i) {
    cumulative += i < counts.size() ? counts[i] : 0;
    prometheus::ClientMetric::Bucket b;
    b.cumulative_count = cumulative;
    b.upper_bound = i < bounds.size() ? bounds[i] : std::numeric_limits<double>::infinity();
    m.histogram.bucket.push_back(b);
  }
  m.histogram.sample_count = cumulative;
  m.histogram.sample_sum = sum;
  family_.metric.push_back(std::move(m));
  return *this;
}

}  // namespace switchboard
