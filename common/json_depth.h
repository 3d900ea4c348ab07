#pragma once

#include <cstddef>
#include <string_view>

namespace switchboard {

// Nesting limit for JSON read from peers: deep enough for any real message,
// shallow enough that recursive code (copies, dumps) cannot exhaust the stack.
inline constexpr size_t kMaxJsonDepth = 32;

// True if no object/array in `text` nests deeper than `max_depth`. Counts
// brackets outside strings only; does not validate the JSON (the parser
// does). Linear, no allocation, any thread.
bool JsonDepthWithin(std::string_view text, size_t max_depth = kMaxJsonDepth);

}  // namespace switchboard
