#include "gateway/readiness.h"

#include "gtest/gtest.h"

namespace switchboard::gateway {
namespace {

Readiness::Facts Up(size_t sessions) {
  Readiness::Facts f;
  f.nats_connected = true;
  f.sessions = sessions;
  return f;
}

TEST(Readiness, ServesClientsWithOneReplicaAndTheBus) {
  Readiness r(1000, 95, 90);
  EXPECT_EQ(r.Check(Up(0)), "");
  Readiness::Facts f = Up(0);
  f.nats_connected = false;
  EXPECT_EQ(r.Check(f), "NATS disconnected");
  f = Up(0);
  f.not_attached = "not attached to any control replica (0 of 2: a:1, b:1)";
  EXPECT_EQ(r.Check(f), f.not_attached);
  f = Up(0);
  f.draining = true;
  EXPECT_EQ(r.Check(f), "draining");
}

TEST(Readiness, NearCapacityItLeavesAndComesBackOnlyWellBelow) {
  Readiness r(1000, 95, 90);
  EXPECT_EQ(r.unready_at(), 950u);
  EXPECT_EQ(r.ready_again_at(), 900u);
  EXPECT_EQ(r.Check(Up(949)), "");
  EXPECT_EQ(r.Check(Up(950)), "near capacity: 950 sessions (unready from 950, ready again below 900)");
  EXPECT_NE(r.Check(Up(920)), "");  // below the high mark, not below the low one: still unready
  EXPECT_NE(r.Check(Up(900)), "");
  EXPECT_EQ(r.Check(Up(899)), "");
  EXPECT_EQ(r.Check(Up(940)), "");  // and it does not flap back until the high mark
}

}  // namespace
}  // namespace switchboard::gateway
