#include "gateway/admission.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace switchboard::gateway {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1'800'000'000);

Admission::Options Caps(size_t sessions, size_t sockets, size_t per_ip) {
  Admission::Options o;
  o.max_sessions = sessions;
  o.max_sockets = sockets;
  o.max_per_ip = per_ip;
  return o;
}

TEST(Admission, CountsSocketsPerAddressFromAcceptToRelease) {
  Admission a(Caps(100, 0, 0));
  EXPECT_EQ(a.max_sockets(), 356u);  // 0: sessions + 256
  auto x = a.Accept("10.0.0.1", false);
  auto y = a.Accept("10.0.0.1", false);
  auto z = a.Accept("10.0.0.2", false);
  ASSERT_NE(x.key, nullptr);
  EXPECT_EQ(x.key, y.key);  // one count per address
  EXPECT_EQ(*z.key, "10.0.0.2");
  EXPECT_EQ(a.open_sockets(), 3u);
  EXPECT_EQ(a.SocketsFrom("10.0.0.1"), 2u);
  a.Release(x.key);
  a.Release(y.key);
  EXPECT_EQ(a.SocketsFrom("10.0.0.1"), 0u);
  EXPECT_EQ(a.addresses(), 1u);  // an address with nothing open is forgotten
  a.Release(nullptr);            // never counted: nothing changes
  EXPECT_EQ(a.open_sockets(), 1u);
}

TEST(Admission, ShedsAtTheSocketCapAndAtTwiceThePerAddressCap) {
  Admission a(Caps(100, 5, 2));
  std::vector<Admission::Key> keys;
  for (int i = 0; i < 4; ++i) {
    auto r = a.Accept("10.0.0.1", false);
    ASSERT_EQ(r.shed, nullptr) << i;
    keys.push_back(r.key);
  }
  auto fifth = a.Accept("10.0.0.1", false);
  EXPECT_EQ(fifth.key, nullptr);
  EXPECT_STREQ(fifth.shed, "too many sockets from one address");
  EXPECT_EQ(a.SocketsFrom("10.0.0.1"), 4u);  // the shed socket is not counted
  auto other = a.Accept("10.0.0.2", false);
  ASSERT_EQ(other.shed, nullptr);
  auto full = a.Accept("10.0.0.3", false);
  EXPECT_STREQ(full.shed, "the gateway's socket cap");
  EXPECT_EQ(a.SocketsFrom("10.0.0.3"), 0u);
  EXPECT_EQ(a.addresses(), 2u);  // nothing left behind for the shed address
  a.Release(keys[0]);
  EXPECT_EQ(a.Accept("10.0.0.3", false).shed, nullptr);  // room again
}

TEST(Admission, AProxysSocketsWaitForTheirClientBeforeThePerAddressCap) {
  Admission a(Caps(100, 0, 1));
  std::vector<Admission::Key> keys;
  for (int i = 0; i < 10; ++i) {
    auto r = a.Accept("192.0.2.1", /*proxied=*/true);
    ASSERT_EQ(r.shed, nullptr) << i;
    keys.push_back(r.key);
  }
  // Each request names its client: the count moves over.
  Admission::Key c1 = a.Rekey(keys[0], "203.0.113.7");
  Admission::Key c2 = a.Rekey(keys[1], "203.0.113.8");
  EXPECT_EQ(a.SocketsFrom("192.0.2.1"), 8u);
  EXPECT_EQ(a.SocketsFrom("203.0.113.7"), 1u);
  EXPECT_EQ(a.open_sockets(), 10u);  // re-keying is not a new socket
  EXPECT_EQ(a.Refusal(*c1, 1, kT0), nullptr);
  EXPECT_EQ(a.Refusal(*c2, 1, kT0), nullptr);
  // A second socket of the same client through the proxy is over its cap.
  Admission::Key c1b = a.Rekey(keys[2], "203.0.113.7");
  EXPECT_EQ(c1b, c1);
  EXPECT_STREQ(a.Refusal(*c1b, 2, kT0), "too many connections from this address");
  // Re-keying to the same address changes nothing.
  EXPECT_EQ(a.Rekey(c2, "203.0.113.8"), c2);
  EXPECT_EQ(a.SocketsFrom("203.0.113.8"), 1u);
  // A socket never counted (no accept seen) is counted by Rekey.
  Admission::Key fresh = a.Rekey(nullptr, "198.51.100.1");
  EXPECT_EQ(a.open_sockets(), 11u);
  a.Release(fresh);
  a.Release(c1);
  a.Release(c1b);
  a.Release(c2);
  for (size_t i = 3; i < keys.size(); ++i) a.Release(keys[i]);
  EXPECT_EQ(a.open_sockets(), 0u);
  EXPECT_EQ(a.addresses(), 0u);
}

TEST(Admission, RefusesWhileDrainingAndWhenFullBeforeAnythingElse) {
  Admission a(Caps(3, 0, 0));
  auto k = a.Accept("10.0.0.1", false);
  EXPECT_EQ(a.Refusal(*k.key, 2, kT0), nullptr);
  EXPECT_STREQ(a.Refusal(*k.key, 3, kT0), "gateway full");
  a.StopAdmitting();
  EXPECT_STREQ(a.Refusal(*k.key, 0, kT0), "draining");
}

TEST(Admission, RateLimitsPerAddressWithoutStarvingOthersAndRefills) {
  Admission::Options o = Caps(1000, 0, 0);
  o.rate_per_ip = 2;
  Admission a(o);
  EXPECT_EQ(a.Refusal("10.0.0.1", 0, kT0), nullptr);
  EXPECT_EQ(a.Refusal("10.0.0.1", 0, kT0), nullptr);
  EXPECT_STREQ(a.Refusal("10.0.0.1", 0, kT0), "too many new connections from this address");
  EXPECT_EQ(a.Refusal("10.0.0.2", 0, kT0), nullptr);  // its own bucket
  // Half a second later one token is back (2 per second), not two.
  EXPECT_EQ(a.Refusal("10.0.0.1", 0, kT0 + absl::Milliseconds(500)), nullptr);
  EXPECT_NE(a.Refusal("10.0.0.1", 0, kT0 + absl::Milliseconds(500)), nullptr);
  // Idle for long: the bucket holds one second's worth, no more.
  const absl::Time later = kT0 + absl::Seconds(60);
  EXPECT_EQ(a.Refusal("10.0.0.1", 0, later), nullptr);
  EXPECT_EQ(a.Refusal("10.0.0.1", 0, later), nullptr);
  EXPECT_NE(a.Refusal("10.0.0.1", 0, later), nullptr);
}

TEST(Admission, TheTotalRateIsACeilingOverEveryAddress) {
  Admission::Options o = Caps(1000, 0, 0);
  o.rate_total = 3;
  Admission a(o);
  EXPECT_EQ(a.Refusal("10.0.0.1", 0, kT0), nullptr);
  EXPECT_EQ(a.Refusal("10.0.0.2", 0, kT0), nullptr);
  EXPECT_EQ(a.Refusal("10.0.0.3", 0, kT0), nullptr);
  EXPECT_STREQ(a.Refusal("10.0.0.4", 0, kT0), "too many new connections");
  EXPECT_EQ(a.Refusal("10.0.0.4", 0, kT0 + absl::Seconds(1)), nullptr);
}

TEST(Admission, RateBucketsStayBoundedUnderAnAddressSweep) {
  Admission::Options o = Caps(1000, 0, 0);
  o.rate_per_ip = 1;
  Admission a(o);
  // A sweep over many addresses, each once, a millisecond apart.
  for (int i = 0; i < 20000; ++i) {
    const std::string ip = "10." + std::to_string(i / 65536) + "." + std::to_string((i / 256) % 256) + "." +
                           std::to_string(i % 256);
    EXPECT_EQ(a.Refusal(ip, 0, kT0 + absl::Milliseconds(i)), nullptr);
    ASSERT_LE(a.rate_buckets(), Admission::kMaxRateBuckets) << i;
  }
  // A flooding address inside the sweep is still held to its own rate.
  const absl::Time t = kT0 + absl::Seconds(30);
  EXPECT_EQ(a.Refusal("10.9.9.9", 0, t), nullptr);
  EXPECT_NE(a.Refusal("10.9.9.9", 0, t), nullptr);
}

TEST(Admission, CountsEachRefusalAndShedByItsReason) {
  Admission::Options o = Caps(2, 3, 1);
  o.rate_total = 100;
  Admission a(o);
  auto k = a.Accept("10.0.0.1", false);
  a.Accept("10.0.0.1", false);
  EXPECT_NE(a.Accept("10.0.0.1", false).shed, nullptr);  // twice the per-address cap
  a.Accept("10.0.0.2", false);
  EXPECT_NE(a.Accept("10.0.0.3", false).shed, nullptr);  // socket cap
  EXPECT_NE(a.Refusal(*k.key, 0, kT0), nullptr);          // 2 sockets > 1 per address
  EXPECT_NE(a.Refusal("10.0.0.2", 2, kT0), nullptr);      // full
  a.StopAdmitting();
  EXPECT_NE(a.Refusal("10.0.0.2", 0, kT0), nullptr);  // draining
  a.NoteOutOfDescriptors();
  using R = Admission::Reason;
  EXPECT_EQ(a.count(R::kSocketsPerAddress), 1u);
  EXPECT_EQ(a.count(R::kSocketCap), 1u);
  EXPECT_EQ(a.count(R::kPerAddress), 1u);
  EXPECT_EQ(a.count(R::kFull), 1u);
  EXPECT_EQ(a.count(R::kDraining), 1u);
  EXPECT_EQ(a.count(R::kOutOfDescriptors), 1u);
  EXPECT_EQ(a.count(R::kRatePerAddress), 0u);
  EXPECT_EQ(a.count(R::kRateTotal), 0u);
  for (size_t i = 0; i < static_cast<size_t>(R::kCount); ++i) {
    EXPECT_STRNE(Admission::Label(static_cast<R>(i)), "unknown") << i;
  }
}

}  // namespace
}  // namespace switchboard::gateway
