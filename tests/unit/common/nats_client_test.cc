#include "common/nats_client_impl.h"

#include "gtest/gtest.h"

namespace switchboard {
namespace {

// With the libnats this project builds against (Debian's 3.4.1), received
// messages are freed on the thread done with them, not handed to the
// library's collector thread with a wake-up each. If a libnats update lays
// its messages out otherwise, this fails and says so (the client still
// works: it falls back to the library's own way).
TEST(NatsClient, ReceivedMessagesAreFreedWithoutWakingTheCollectorThread) {
  EXPECT_TRUE(NatsMessagesFreedInPlace());
}

}  // namespace
}  // namespace switchboard
