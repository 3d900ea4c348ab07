// libFuzzer target: Centrifugo client protocol, JSON encoding, through the
// real hub (connect with a token, refresh, ping, batches, expiry, terminate).
#define FUZZ_WIRE ::switchboard::gateway::Wire::kCentrifugeJson
#define FUZZ_BINARY false
#include "tests/fuzz/fuzz_centrifuge.inc"
