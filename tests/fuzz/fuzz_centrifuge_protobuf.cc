// libFuzzer target: Centrifugo client protocol, protobuf encoding (varint
// length-delimited command batches), through the real hub.
#define FUZZ_WIRE ::switchboard::gateway::Wire::kCentrifugeProtobuf
#define FUZZ_BINARY true
#include "tests/fuzz/fuzz_centrifuge.inc"
