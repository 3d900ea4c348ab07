#include "gateway/record_chunks.h"

namespace switchboard::gateway {

std::vector<std::vector<v1::SessionRecord>> ChunkRecords(std::vector<v1::SessionRecord> records, size_t max_bytes) {
  std::vector<std::vector<v1::SessionRecord>> out;
  size_t bytes = 0;
  for (auto& r : records) {
    const size_t size = r.ByteSizeLong() + 8;  // field tag and length
    if (out.empty() || (bytes + size > max_bytes && !out.back().empty())) {
      out.emplace_back();
      bytes = 0;
    }
    bytes += size;
    out.back().push_back(std::move(r));
  }
  return out;
}

}  // namespace switchboard::gateway
