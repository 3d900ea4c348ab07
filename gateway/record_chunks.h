#pragma once

#include <cstddef>
#include <vector>

#include "switchboard/v1/bus.pb.h"

namespace switchboard::gateway {

// Splits records into groups of at most about `max_bytes` encoded each (a
// record larger than that travels alone), in order: how snapshots, deltas and
// bus answers stay under gRPC's and NATS's message limits. Any thread.
std::vector<std::vector<v1::SessionRecord>> ChunkRecords(std::vector<v1::SessionRecord> records, size_t max_bytes);

}  // namespace switchboard::gateway
