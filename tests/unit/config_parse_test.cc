#include "server/app/config_parse.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace aopay {
namespace {

using ::testing::HasSubstr;

TEST(ParseLedgerSpecTest, SqlitePathIsDurable) {
  absl::StatusOr<LedgerSpec> spec = ParseLedgerSpec("sqlite:payouts.db");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->path, "payouts.db");
  EXPECT_TRUE(spec->durable);
}

TEST(ParseLedgerSpecTest, SynchronousOffDropsFsync) {
  absl::StatusOr<LedgerSpec> spec =
      ParseLedgerSpec("sqlite:/var/lib/p.db?synchronous=off");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->path, "/var/lib/p.db");
  EXPECT_FALSE(spec->durable);
}

TEST(ParseLedgerSpecTest, RefusesOtherSchemesAndOptions) {
  EXPECT_FALSE(ParseLedgerSpec("payouts.db").ok());
  EXPECT_FALSE(ParseLedgerSpec("sqlite:").ok());
  EXPECT_FALSE(ParseLedgerSpec("sqlite:p.db?synchronous=normal").ok());
  EXPECT_FALSE(ParseLedgerSpec("sqlite:p.db?synchronous=off?x").ok());
}

// Found by the config fuzz target: an option without a path gave an empty
// path (SQLite's temporary database), refused only later and less clearly.
TEST(ParseLedgerSpecTest, PostgresqlUrisNameThePostgresLedger) {
  for (const char* uri : {"postgresql://gw@db:5432/payouts?sslmode=verify-full",
                          "postgres://gw@db/payouts"}) {
    absl::StatusOr<LedgerSpec> spec = ParseLedgerSpec(uri);
    ASSERT_TRUE(spec.ok()) << spec.status();
    EXPECT_EQ(spec->kind, LedgerSpec::Kind::kPostgres);
    EXPECT_EQ(spec->uri, uri);
  }
  EXPECT_EQ(ParseLedgerSpec("sqlite:p.db")->kind, LedgerSpec::Kind::kSqlite);
}

TEST(ParseLedgerSpecTest, RefusesAnOptionWithoutAPath) {
  for (const char* spec :
       {"sqlite:?synchronous=off", "sqlite:?synchronous=full"}) {
    absl::StatusOr<LedgerSpec> parsed = ParseLedgerSpec(spec);
    ASSERT_FALSE(parsed.ok())
        << spec << " gave path \"" << parsed->path << "\"";
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(parsed.status().message(), HasSubstr("--ledger"));
  }
}

TEST(ParseHostPortTest, HostAndPort) {
  absl::StatusOr<HostPort> where = ParseHostPort("listen", "127.0.0.1:50051");
  ASSERT_TRUE(where.ok()) << where.status();
  EXPECT_EQ(where->host, "127.0.0.1");
  EXPECT_EQ(where->port, 50051);
}

TEST(ParseHostPortTest, BracketedIpv6) {
  absl::StatusOr<HostPort> where = ParseHostPort("listen", "[::1]:0");
  ASSERT_TRUE(where.ok()) << where.status();
  EXPECT_EQ(where->host, "::1");
  EXPECT_EQ(where->port, 0);
  EXPECT_EQ(JoinHostPort(where->host, where->port), "[::1]:0");
}

TEST(ParseHostPortTest, RefusesBadAddressesNamingTheFlag) {
  for (const char* text :
       {"", "127.0.0.1", ":80", "[]:80", "h:65536", "h:-1", "h:x"}) {
    absl::StatusOr<HostPort> where = ParseHostPort("metrics_listen", text);
    ASSERT_FALSE(where.ok()) << text;
    EXPECT_THAT(where.status().message(), HasSubstr("--metrics_listen"));
  }
}

// Found by the config fuzz target: a host with brackets inside did not
// survive JoinHostPort (the address the server prints).
TEST(ParseHostPortTest, RefusesBracketsInsideTheHost) {
  for (const char* text : {"[[1;1]]:0", "[a]b]:80", "a]:80", "[a:80"}) {
    EXPECT_FALSE(ParseHostPort("listen", text).ok()) << text;
  }
}

}  // namespace
}  // namespace aopay
