#include "common/clients.h"

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace aopay {
namespace {

using testing::HasSubstr;
using testing::Not;
using testing::StartsWith;

// SHA-256 of "test" and of "test2", the tokens of the header's example.
constexpr char kTestDigest[] =
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
constexpr char kTest2Digest[] =
    "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752";

// The example of common/clients.h with its digests in full.
std::string HeaderExample() {
  return absl::StrCat(
      "# name        sha256-of-token   scopes                       limits\n",
      "payroll-svc   ", kTestDigest,
      "  payouts:write,payouts:read   max_payout_paise=5000000 "
      "daily_paise=200000000\n",
      "ops-console   ", kTest2Digest, "   payouts:read,admin\n",
      "batch-host    -                 payouts:write                "
      "# mTLS: named by its certificate's CN\n");
}

std::shared_ptr<const ClientRegistry> MustParse(const std::string& text) {
  absl::StatusOr<std::shared_ptr<const ClientRegistry>> registry =
      ClientRegistry::Parse(text);
  EXPECT_TRUE(registry.ok()) << registry.status();
  return registry.ok() ? *registry : nullptr;
}

TEST(ClientsFileTest, ApprovalAbovePaiseIsALimitOfItsOwn) {
  std::shared_ptr<const ClientRegistry> parsed = MustParse(absl::StrCat(
      "maker ", kTestDigest, " payouts:write approval_above_paise=500000\n",
      "checker ", kTest2Digest, " approve\n"));
  ASSERT_NE(parsed, nullptr);
  const std::vector<Client>& clients = parsed->clients();
  EXPECT_EQ(clients[0].approval_above_paise, 500000);
  EXPECT_FALSE(clients[1].approval_above_paise.has_value());
  EXPECT_FALSE(ClientRegistry::Parse(
                   absl::StrCat("maker ", kTestDigest,
                                " payouts:write approval_above_paise=1 "
                                "approval_above_paise=2\n"))
                   .ok());
  EXPECT_FALSE(ClientRegistry::Parse(absl::StrCat("maker ", kTestDigest,
                                                  " payouts:write "
                                                  "approval_above_paise=0\n"))
                   .ok());
}

TEST(TokenDigestTest, IsLowerCaseHexSha256) {
  EXPECT_EQ(TokenDigest("test"), kTestDigest);
  EXPECT_EQ(TokenDigest("test2"), kTest2Digest);
  EXPECT_EQ(TokenDigest(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(AnonymousClientTest, HasNoNameEveryScopeAndNoLimits) {
  const Client anonymous = AnonymousClient();
  EXPECT_EQ(anonymous.name, "");
  EXPECT_EQ(anonymous.scopes, kAllScopes);
  EXPECT_FALSE(anonymous.max_payout_paise.has_value());
  EXPECT_FALSE(anonymous.daily_paise.has_value());
  EXPECT_TRUE(anonymous.ReadsAll());
  EXPECT_TRUE(anonymous.ReadsOwn());
}

TEST(ClientRegistryTest, ParsesTheHeaderExample) {
  std::shared_ptr<const ClientRegistry> registry = MustParse(HeaderExample());
  ASSERT_NE(registry, nullptr);
  const std::vector<Client>& clients = registry->clients();
  ASSERT_EQ(clients.size(), 3u);

  EXPECT_EQ(clients[0].name, "payroll-svc");
  EXPECT_EQ(clients[0].scopes, kScopeWrite | kScopeRead);
  EXPECT_EQ(clients[0].max_payout_paise, 5000000);
  EXPECT_EQ(clients[0].daily_paise, 200000000);

  EXPECT_EQ(clients[1].name, "ops-console");
  EXPECT_EQ(clients[1].scopes, kScopeRead | kScopeAdmin);
  EXPECT_FALSE(clients[1].max_payout_paise.has_value());
  EXPECT_FALSE(clients[1].daily_paise.has_value());

  EXPECT_EQ(clients[2].name, "batch-host");
  EXPECT_EQ(clients[2].scopes, kScopeWrite);

  EXPECT_EQ(registry->FindByToken("test"), &clients[0]);
  EXPECT_EQ(registry->FindByToken("test2"), &clients[1]);
  EXPECT_EQ(registry->FindByCertificateName("batch-host"), &clients[2]);
}

TEST(ClientRegistryTest, EveryScopeAndBothSeparators) {
  std::shared_ptr<const ClientRegistry> registry = MustParse(
      absl::StrCat("all\t", kTestDigest,
                   "\tpayouts:write,payouts:read,payouts:read_all,admin,"
                   "approve \t daily_paise=1\tmax_payout_paise=2\n"));
  ASSERT_NE(registry, nullptr);
  ASSERT_EQ(registry->clients().size(), 1u);
  const Client& client = registry->clients()[0];
  EXPECT_EQ(client.scopes, kAllScopes);
  EXPECT_EQ(client.daily_paise, 1);
  EXPECT_EQ(client.max_payout_paise, 2);
}

TEST(ClientRegistryTest, CommentsAndBlankLinesAreSkipped) {
  std::shared_ptr<const ClientRegistry> registry = MustParse(absl::StrCat(
      "# the clients of the gateway\n", "\n", "   \t  \n", "   # indented\n",
      "a ", kTestDigest, " payouts:read#no space before the comment\n",
      "b - payouts:write   # trailing comment\n", "#c ", kTest2Digest,
      " admin\n", "\n"));
  ASSERT_NE(registry, nullptr);
  ASSERT_EQ(registry->clients().size(), 2u);
  EXPECT_EQ(registry->clients()[0].name, "a");
  EXPECT_EQ(registry->clients()[0].scopes, kScopeRead);
  EXPECT_EQ(registry->clients()[1].name, "b");
  EXPECT_EQ(registry->FindByToken("test2"), nullptr);
}

TEST(ClientRegistryTest, EmptyTextHasNoClients) {
  std::shared_ptr<const ClientRegistry> registry = MustParse("");
  ASSERT_NE(registry, nullptr);
  EXPECT_TRUE(registry->clients().empty());
  EXPECT_EQ(registry->FindByToken("test"), nullptr);
  EXPECT_EQ(registry->FindByCertificateName("x"), nullptr);
}

TEST(ClientRegistryTest, CrlfLineEndingsAreTolerated) {
  std::string text = absl::StrReplaceAll(HeaderExample(), {{"\n", "\r\n"}});
  absl::StrAppend(&text, "\r\n# last\r\n");
  std::shared_ptr<const ClientRegistry> registry = MustParse(text);
  ASSERT_NE(registry, nullptr);
  ASSERT_EQ(registry->clients().size(), 3u);
  EXPECT_EQ(registry->clients()[0].daily_paise, 200000000);
  EXPECT_EQ(registry->clients()[1].scopes, kScopeRead | kScopeAdmin);
  EXPECT_EQ(registry->clients()[2].scopes, kScopeWrite);
  EXPECT_EQ(registry->FindByToken("test2"), &registry->clients()[1]);
  EXPECT_EQ(registry->FindByCertificateName("batch-host"),
            &registry->clients()[2]);
}

TEST(ClientRegistryTest, DigestsAreCaseInsensitive) {
  std::shared_ptr<const ClientRegistry> registry = MustParse(absl::StrCat(
      "upper ", absl::AsciiStrToUpper(kTestDigest), " payouts:read\n"));
  ASSERT_NE(registry, nullptr);
  EXPECT_EQ(registry->FindByToken("test"), &registry->clients()[0]);

  // The same digest in another case is still the same token.
  absl::StatusOr<std::shared_ptr<const ClientRegistry>> twice =
      ClientRegistry::Parse(
          absl::StrCat("lower ", kTestDigest, " payouts:read\n", "upper ",
                       absl::AsciiStrToUpper(kTestDigest), " payouts:read\n"));
  EXPECT_EQ(twice.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(twice.status().message()), StartsWith("line 2: "));
}

TEST(ClientRegistryTest, FindByToken) {
  std::shared_ptr<const ClientRegistry> registry = MustParse(HeaderExample());
  ASSERT_NE(registry, nullptr);
  EXPECT_EQ(registry->FindByToken("test"), &registry->clients()[0]);
  EXPECT_EQ(registry->FindByToken("test2"), &registry->clients()[1]);
  EXPECT_EQ(registry->FindByToken("wrong"), nullptr);
  EXPECT_EQ(registry->FindByToken("test "), nullptr);
  EXPECT_EQ(registry->FindByToken("TEST"), nullptr);
  EXPECT_EQ(registry->FindByToken(""), nullptr);
  // The digest itself is not a token, nor is the mTLS client's "-".
  EXPECT_EQ(registry->FindByToken(kTestDigest), nullptr);
  EXPECT_EQ(registry->FindByToken("-"), nullptr);
}

TEST(ClientRegistryTest, EmptyTokenMatchesNoLineEvenItsOwnDigest) {
  std::shared_ptr<const ClientRegistry> registry =
      MustParse(absl::StrCat("empty ", TokenDigest(""), " payouts:read\n"));
  ASSERT_NE(registry, nullptr);
  EXPECT_EQ(registry->FindByToken(""), nullptr);
}

TEST(ClientRegistryTest, FindByTokenFindsTheLastOfManyLines) {
  std::string text;
  for (int i = 0; i < 100; ++i) {
    absl::StrAppend(&text, "c", i, " ", TokenDigest(absl::StrCat("tok", i)),
                    " payouts:read\n");
  }
  std::shared_ptr<const ClientRegistry> registry = MustParse(text);
  ASSERT_NE(registry, nullptr);
  for (int i : {0, 1, 50, 99}) {
    const Client* client = registry->FindByToken(absl::StrCat("tok", i));
    ASSERT_NE(client, nullptr) << i;
    EXPECT_EQ(client->name, absl::StrCat("c", i));
  }
  EXPECT_EQ(registry->FindByToken("tok100"), nullptr);
}

TEST(ClientRegistryTest, FindByCertificateNameOnlyForDashLines) {
  std::shared_ptr<const ClientRegistry> registry = MustParse(HeaderExample());
  ASSERT_NE(registry, nullptr);
  EXPECT_EQ(registry->FindByCertificateName("batch-host"),
            &registry->clients()[2]);
  // Clients with a token are not named by a certificate.
  EXPECT_EQ(registry->FindByCertificateName("payroll-svc"), nullptr);
  EXPECT_EQ(registry->FindByCertificateName("ops-console"), nullptr);
  EXPECT_EQ(registry->FindByCertificateName("Batch-Host"), nullptr);
  EXPECT_EQ(registry->FindByCertificateName("batch-host "), nullptr);
  EXPECT_EQ(registry->FindByCertificateName(""), nullptr);
  EXPECT_EQ(registry->FindByCertificateName("-"), nullptr);
}

TEST(ClientTest, ScopeImplications) {
  auto with = [](uint32_t scopes) {
    Client client;
    client.scopes = scopes;
    return client;
  };
  EXPECT_FALSE(with(0).ReadsOwn());
  EXPECT_FALSE(with(0).ReadsAll());

  EXPECT_TRUE(with(kScopeWrite).Has(kScopeWrite));
  EXPECT_FALSE(with(kScopeWrite).Has(kScopeRead));
  EXPECT_FALSE(with(kScopeWrite).ReadsOwn());
  EXPECT_FALSE(with(kScopeWrite).ReadsAll());

  EXPECT_TRUE(with(kScopeRead).ReadsOwn());
  EXPECT_FALSE(with(kScopeRead).ReadsAll());

  for (uint32_t all : {uint32_t{kScopeReadAll}, uint32_t{kScopeAdmin},
                       uint32_t{kScopeApprove}}) {
    EXPECT_TRUE(with(all).ReadsAll()) << all;
    EXPECT_TRUE(with(all).ReadsOwn()) << all;
    EXPECT_FALSE(with(all).Has(kScopeWrite)) << all;
  }
  // admin and approve imply reading, not each other.
  EXPECT_FALSE(with(kScopeAdmin).Has(kScopeApprove));
  EXPECT_FALSE(with(kScopeApprove).Has(kScopeAdmin));
  EXPECT_FALSE(with(kScopeAdmin).Has(kScopeReadAll));
}

struct ErrorCase {
  std::string test_name;
  std::string line;           // the bad line, after two good ones
  std::string expected_part;  // in the message after "line 3: "
};

class ClientRegistryErrorTest : public testing::TestWithParam<ErrorCase> {};

// Two good lines (and a comment) first, so that the message must name the
// right line, not the first.
std::string WithGoodLinesBefore(const std::string& bad) {
  return absl::StrCat("good-1 ", kTestDigest, " payouts:write\n",
                      "# a comment\n", "good-2 - payouts:read\n", bad,
                      "\nafter ", TokenDigest("after"), " payouts:read\n");
}

TEST_P(ClientRegistryErrorTest, NamesTheLineAndNeverQuotesADigest) {
  const ErrorCase& c = GetParam();
  absl::StatusOr<std::shared_ptr<const ClientRegistry>> registry =
      ClientRegistry::Parse(WithGoodLinesBefore(c.line));
  ASSERT_FALSE(registry.ok());
  EXPECT_EQ(registry.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(registry.status().message());
  EXPECT_THAT(message, StartsWith("line 4: ")) << message;
  EXPECT_THAT(message, HasSubstr(c.expected_part)) << message;
  // No digest (nor a long piece of one) in any case.
  for (const std::string& digest :
       {std::string(kTestDigest), std::string(kTest2Digest),
        absl::AsciiStrToUpper(kTest2Digest), TokenDigest("after")}) {
    EXPECT_THAT(message, Not(HasSubstr(digest.substr(0, 16)))) << message;
    EXPECT_THAT(message, Not(HasSubstr(digest.substr(48)))) << message;
  }
  EXPECT_THAT(message, Not(HasSubstr("9f86d081"))) << message;
  EXPECT_THAT(message, Not(HasSubstr("60303ae2"))) << message;
}

const std::string kD2 = kTest2Digest;

INSTANTIATE_TEST_SUITE_P(
    Cases, ClientRegistryErrorTest,
    testing::Values(
        ErrorCase{"OneField", "lonely", "too few fields"},
        ErrorCase{"TwoFields", "name " + kD2, "too few fields"},
        ErrorCase{"NameTooLong", std::string(65, 'a') + " - payouts:read",
                  "bad client name"},
        ErrorCase{"NameWithSlash", "a/b - payouts:read",
                  "bad client name 'a/b'"},
        ErrorCase{"NameWithColon", "a:b - payouts:read", "bad client name"},
        ErrorCase{"NameNonAscii", "caf\xc3\xa9 - payouts:read",
                  "bad client name"},
        ErrorCase{"DuplicateName", "good-1 " + kD2 + " payouts:read",
                  "duplicate client name 'good-1' (first on line 1)"},
        ErrorCase{"DuplicateNameOfMtlsLine", "good-2 - payouts:write",
                  "duplicate client name 'good-2' (first on line 3)"},
        ErrorCase{"DigestTooShort", "n " + kD2.substr(1) + " payouts:read",
                  "64 hex digits"},
        ErrorCase{"DigestTooLong", "n " + kD2 + "0 payouts:read",
                  "64 hex digits"},
        ErrorCase{"DigestNotHex", "n " + kD2.substr(1) + "g payouts:read",
                  "64 hex digits"},
        ErrorCase{"DigestTwoDashes", "n -- payouts:read", "64 hex digits"},
        ErrorCase{"DuplicateDigest",
                  absl::StrCat("n ", kTestDigest, " payouts:read"),
                  "duplicate digest: the same token as line 1"},
        ErrorCase{"DuplicateDigestOtherCase",
                  absl::StrCat("n ", absl::AsciiStrToUpper(kTestDigest),
                               " payouts:read"),
                  "duplicate digest"},
        ErrorCase{"UnknownScope", "n - payouts:write,payouts:delete",
                  "unknown scope 'payouts:delete'"},
        ErrorCase{"ScopeWrongCase", "n - Admin", "unknown scope 'Admin'"},
        ErrorCase{"ScopeIsADigest", "n - " + kD2, "unknown scope of 64"},
        ErrorCase{"ScopeListHasADigest", "n - admin," + kD2,
                  "unknown scope of 64"},
        ErrorCase{"NoScope", "n - ,", "no scope"},
        ErrorCase{"EmptyScopeBetweenCommas", "n - admin,,approve",
                  "empty scope"},
        ErrorCase{"TrailingComma", "n - admin,", "empty scope"},
        ErrorCase{"LimitWithoutValue", "n - admin daily_paise",
                  "'daily_paise' is not LIMIT=VALUE"},
        ErrorCase{"DigestWhereALimitGoes", "n - admin " + kD2,
                  "of 64 characters (not shown) is not LIMIT=VALUE"},
        ErrorCase{"UnknownLimit", "n - admin weekly_paise=5",
                  "unknown limit 'weekly_paise'"},
        ErrorCase{"UnknownLimitNamedByADigest", "n - admin " + kD2 + "=5",
                  "unknown limit of 64"},
        ErrorCase{"RepeatedLimit",
                  "n - admin daily_paise=5 max_payout_paise=1 daily_paise=5",
                  "daily_paise given twice"},
        ErrorCase{"ZeroLimit", "n - admin max_payout_paise=0",
                  "max_payout_paise must be a positive integer"},
        ErrorCase{"NegativeLimit", "n - admin max_payout_paise=-5",
                  "max_payout_paise must be a positive integer"},
        ErrorCase{"SignedLimit", "n - admin daily_paise=+5",
                  "daily_paise must be a positive integer"},
        ErrorCase{"EmptyLimit", "n - admin daily_paise=",
                  "daily_paise must be a positive integer"},
        ErrorCase{"DecimalLimit", "n - admin daily_paise=1.5",
                  "daily_paise must be a positive integer"},
        ErrorCase{"HexDigestAsLimitValue", "n - admin daily_paise=" + kD2,
                  "daily_paise must be a positive integer"},
        ErrorCase{"OverflowingLimit",
                  "n - admin daily_paise=9223372036854775808",
                  "daily_paise is too large"},
        ErrorCase{"HugeLimit", "n - admin daily_paise=" + std::string(30, '9'),
                  "daily_paise is too large"},
        ErrorCase{"CrlfDoesNotHideErrors", "n - nope\r",
                  "unknown scope 'nope'"}),
    [](const testing::TestParamInfo<ErrorCase>& info) {
      return info.param.test_name;
    });

TEST(ClientRegistryTest, LargestLimitIsAccepted) {
  std::shared_ptr<const ClientRegistry> registry = MustParse(
      "n - admin daily_paise=9223372036854775807 max_payout_paise=007\n");
  ASSERT_NE(registry, nullptr);
  EXPECT_EQ(registry->clients()[0].daily_paise, INT64_MAX);
  EXPECT_EQ(registry->clients()[0].max_payout_paise, 7);
}

TEST(ClientRegistryTest, RepeatedScopeIsHarmless) {
  std::shared_ptr<const ClientRegistry> registry =
      MustParse("n - admin,admin\n");
  ASSERT_NE(registry, nullptr);
  EXPECT_EQ(registry->clients()[0].scopes, kScopeAdmin);
}

class ClientRegistryLoadTest : public testing::Test {
 protected:
  std::string TempPath(const std::string& name) {
    const char* dir = std::getenv("TEST_TMPDIR");
    return absl::StrCat(dir != nullptr ? dir : "/tmp", "/clients_test_",
                        getpid(), "_", name);
  }
};

TEST_F(ClientRegistryLoadTest, LoadsAFile) {
  const std::string path = TempPath("good");
  {
    std::ofstream out(path, std::ios::binary);
    out << HeaderExample();
  }
  absl::StatusOr<std::shared_ptr<const ClientRegistry>> registry =
      ClientRegistry::Load(path);
  std::remove(path.c_str());
  ASSERT_TRUE(registry.ok()) << registry.status();
  EXPECT_EQ((*registry)->clients().size(), 3u);
  EXPECT_NE((*registry)->FindByToken("test"), nullptr);
}

TEST_F(ClientRegistryLoadTest, MissingFileNamesThePath) {
  const std::string path = TempPath("does-not-exist");
  absl::StatusOr<std::shared_ptr<const ClientRegistry>> registry =
      ClientRegistry::Load(path);
  ASSERT_FALSE(registry.ok());
  EXPECT_EQ(registry.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(registry.status().message()), HasSubstr(path));
}

TEST_F(ClientRegistryLoadTest, DirectoryIsAReadError) {
  const char* dir = std::getenv("TEST_TMPDIR");
  const std::string path = dir != nullptr ? dir : "/tmp";
  absl::StatusOr<std::shared_ptr<const ClientRegistry>> registry =
      ClientRegistry::Load(path);
  ASSERT_FALSE(registry.ok());
  EXPECT_THAT(std::string(registry.status().message()), HasSubstr(path));
}

TEST_F(ClientRegistryLoadTest, ParseErrorNamesThePathAndTheLine) {
  const std::string path = TempPath("bad");
  {
    std::ofstream out(path, std::ios::binary);
    out << "# header\n"
        << "n " << kTestDigest << " payouts:delete\n";
  }
  absl::StatusOr<std::shared_ptr<const ClientRegistry>> registry =
      ClientRegistry::Load(path);
  std::remove(path.c_str());
  ASSERT_FALSE(registry.ok());
  EXPECT_EQ(registry.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(registry.status().message()), HasSubstr(path));
  EXPECT_THAT(std::string(registry.status().message()), HasSubstr("line 2: "));
  EXPECT_THAT(std::string(registry.status().message()),
              Not(HasSubstr("9f86d081")));
}

}  // namespace
}  // namespace aopay
