#include "gateway/jwt_verifier.h"

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/unit/testing/tokens.h"

namespace switchboard::gateway {
namespace {

using ::switchboard::testing::MakeToken;

constexpr char kSecret[] = "unit-test-secret";
const absl::Time kNow = absl::FromUnixSeconds(1'800'000'000);

TEST(JwtVerifier, AcceptsValidTokenAndReadsClaims) {
  std::string token = MakeToken(
      R"({"sub":"42","exp":1800000100,"info":{"name":"Ann"},"meta":{"plan":"pro"}})", kSecret);
  auto r = JwtVerifier::Verify(token, kSecret, kNow);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.claims.sub, "42");
  EXPECT_EQ(r.claims.exp, 1800000100);
  EXPECT_NE(r.claims.info_json.find("Ann"), std::string::npos);
  EXPECT_NE(r.claims.meta_json.find("pro"), std::string::npos);
}

TEST(JwtVerifier, TokenWithoutExpNeverExpires) {
  auto r = JwtVerifier::Verify(MakeToken(R"({"sub":"7"})", kSecret), kSecret, kNow);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.claims.exp, 0);
  EXPECT_EQ(r.claims.meta_json, "");
}

TEST(JwtVerifier, RejectsBadSignature) {
  auto r = JwtVerifier::Verify(MakeToken(R"({"sub":"42"})", "another-secret"), kSecret, kNow);
  EXPECT_FALSE(r.status.ok());
  EXPECT_EQ(r.error, TokenError::kInvalid);
}

TEST(JwtVerifier, RejectsTamperedPayload) {
  std::string token = MakeToken(R"({"sub":"42"})", kSecret);
  std::string other = MakeToken(R"({"sub":"43"})", kSecret);
  // Header of one, payload of another, signature of the first.
  size_t a1 = token.find('.'), a2 = token.rfind('.');
  size_t b1 = other.find('.'), b2 = other.rfind('.');
  std::string forged = token.substr(0, a1) + other.substr(b1, b2 - b1) + token.substr(a2);
  EXPECT_FALSE(JwtVerifier::Verify(forged, kSecret, kNow).status.ok());
}

TEST(JwtVerifier, ReportsExpiredSeparately) {
  std::string token = MakeToken(absl::StrCat(R"({"sub":"42","exp":)", 1'800'000'000 - 1, "}"), kSecret);
  auto r = JwtVerifier::Verify(token, kSecret, kNow);
  EXPECT_FALSE(r.status.ok());
  EXPECT_EQ(r.error, TokenError::kExpired);
}

TEST(JwtVerifier, RejectsOtherAlgorithms) {
  EXPECT_FALSE(JwtVerifier::Verify(MakeToken(R"({"sub":"42"})", kSecret, JWT_ALG_HS512), kSecret, kNow).status.ok());
  EXPECT_FALSE(JwtVerifier::Verify(MakeToken(R"({"sub":"42"})", kSecret, JWT_ALG_HS384), kSecret, kNow).status.ok());
}

TEST(JwtVerifier, RejectsUnsignedToken) {
  std::string token = MakeToken(R"({"sub":"42"})", "", JWT_ALG_NONE);
  ASSERT_FALSE(token.empty());
  EXPECT_FALSE(JwtVerifier::Verify(token, kSecret, kNow).status.ok());
}

TEST(JwtVerifier, RejectsMissingOrNonStringSub) {
  EXPECT_FALSE(JwtVerifier::Verify(MakeToken(R"({"exp":1800000100})", kSecret), kSecret, kNow).status.ok());
  EXPECT_FALSE(JwtVerifier::Verify(MakeToken(R"({"sub":42})", kSecret), kSecret, kNow).status.ok());
}

TEST(JwtVerifier, RejectsGarbage) {
  for (const char* bad : {"", "abc", "a.b.c", "....", "eyJhbGciOiJIUzI1NiJ9..", "\xff\xfe.\x01.x"}) {
    auto r = JwtVerifier::Verify(bad, kSecret, kNow);
    EXPECT_FALSE(r.status.ok()) << bad;
    EXPECT_EQ(r.error, TokenError::kInvalid);
  }
  EXPECT_FALSE(JwtVerifier::Verify(std::string(20000, 'a'), kSecret, kNow).status.ok());
}

}  // namespace
}  // namespace switchboard::gateway
