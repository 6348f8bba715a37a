// `payoutctl health`, the probe that Docker's HEALTHCHECK and the Kubernetes
// probes run (docs/deployment.md): exit 0 against a serving gateway, 1 when
// the gateway answers NOT_SERVING (0 with --liveness), 10 + the gRPC code
// when nobody answers, over plaintext and over TLS, never with a token.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "common/clients.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.pb.h"
#include "gtest/gtest.h"
#include "rapidjson/document.h"
#include "tests/integration/harness.h"

namespace aopay::testing {
namespace {

using ::grpc::health::v1::HealthCheckResponse;
using ::testing::HasSubstr;

constexpr char kPayoutService[] = "aopay.payout.v1.PayoutService";
constexpr int kUnavailable = 10 + 14;
constexpr int kNotFound = 10 + 5;

// payoutctl GLOBAL_FLAGS... health HEALTH_FLAGS...
CommandResult Health(const std::vector<std::string>& global_flags,
                     const std::vector<std::string>& health_flags = {}) {
  std::vector<std::string> argv = {PAYOUTCTL_BIN, "--timeout=5s"};
  argv.insert(argv.end(), global_flags.begin(), global_flags.end());
  argv.push_back("health");
  argv.insert(argv.end(), health_flags.begin(), health_flags.end());
  return RunCommand(argv);
}

// A loopback port that refuses connections for as long as it lives: the
// socket is bound, so no one else can take the port, and never listens.
class RefusingPort {
 public:
  RefusingPort() : fd_(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(addr);
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &length), 0);
    address_ = absl::StrCat("127.0.0.1:", ntohs(addr.sin_port));
  }
  ~RefusingPort() { close(fd_); }
  RefusingPort(const RefusingPort&) = delete;
  RefusingPort& operator=(const RefusingPort&) = delete;
  const std::string& address() const { return address_; }

 private:
  int fd_;
  std::string address_;
};

TEST(PayoutctlHealthTest, ServingGatewayExitsZero) {
  const std::string dir = MakeTempDir();
  GatewayProcess gateway("sandbox", dir + "/ledger.db");
  ASSERT_FALSE(gateway.address().empty());
  const std::string target = "--target=" + gateway.address();

  CommandResult overall = Health({target});
  EXPECT_EQ(overall.exit_code, 0) << overall.out << overall.err;
  EXPECT_EQ(overall.out, "gateway: SERVING\n");

  CommandResult service =
      Health({target, "--json"}, {std::string("--service=") + kPayoutService});
  EXPECT_EQ(service.exit_code, 0) << service.out << service.err;
  rapidjson::Document json;
  json.Parse(service.out.c_str());
  ASSERT_FALSE(json.HasParseError()) << service.out;
  EXPECT_STREQ(json["status"].GetString(), "SERVING");
  EXPECT_STREQ(json["service"].GetString(), kPayoutService);

  CommandResult unknown = Health({target}, {"--service=no.such.Service"});
  EXPECT_EQ(unknown.exit_code, kNotFound) << unknown.out << unknown.err;
}

TEST(PayoutctlHealthTest, NobodyListeningIsUnavailableEvenForLiveness) {
  RefusingPort port;
  CommandResult readiness = Health({"--target=" + port.address()});
  EXPECT_EQ(readiness.exit_code, kUnavailable)
      << readiness.out << readiness.err;
  EXPECT_THAT(readiness.err, HasSubstr("UNAVAILABLE"));
  EXPECT_EQ(readiness.out, "");

  CommandResult liveness =
      Health({"--target=" + port.address()}, {"--liveness"});
  EXPECT_EQ(liveness.exit_code, kUnavailable) << liveness.out << liveness.err;
}

// A gateway whose ledger file was deleted answers NOT_SERVING until it is
// restarted: readiness fails with exit 1, liveness passes (restarting it
// would drop outcomes that wait in memory for the ledger).
TEST(PayoutctlHealthTest, NotServingExitsOneAndLivenessStillPasses) {
  const std::string dir = MakeTempDir();
  const std::string ledger = dir + "/ledger.db";
  GatewayProcess gateway("sandbox", ledger);
  ASSERT_FALSE(gateway.address().empty());
  const std::string target = "--target=" + gateway.address();
  ASSERT_EQ(Health({target}).exit_code, 0);

  ASSERT_EQ(unlink(ledger.c_str()), 0);
  ASSERT_TRUE(Eventually(
      [&] {
        return CheckHealth(gateway.channel(), "") ==
               HealthCheckResponse::NOT_SERVING;
      },
      absl::Seconds(15)));

  CommandResult readiness = Health({target});
  EXPECT_EQ(readiness.exit_code, 1) << readiness.out << readiness.err;
  EXPECT_EQ(readiness.out, "gateway: NOT_SERVING\n");
  CommandResult service =
      Health({target}, {std::string("--service=") + kPayoutService});
  EXPECT_EQ(service.exit_code, 1) << service.out << service.err;

  CommandResult liveness = Health({target}, {"--liveness"});
  EXPECT_EQ(liveness.exit_code, 0) << liveness.out << liveness.err;
  EXPECT_EQ(liveness.out, "gateway: NOT_SERVING\n");
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
}

void OpenSsl(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"/usr/bin/openssl"};
  argv.insert(argv.end(), args.begin(), args.end());
  const CommandResult result = RunCommand(argv);
  ASSERT_EQ(result.exit_code, 0) << absl::StrJoin(argv, " ") << "\n"
                                 << result.err;
}

// As in a container: TLS and a clients file. The probe verifies the gateway's
// certificate with the CA (the certificate names localhost) and needs no
// token; without TLS it cannot talk to a TLS port.
TEST(PayoutctlHealthTest, TlsGatewayNeedsTheCaAndNoToken) {
  const std::string dir = MakeTempDir();
  const std::string ca_key = dir + "/ca.key", ca = dir + "/ca.pem";
  const std::string key = dir + "/server.key", csr = dir + "/server.csr";
  const std::string cert = dir + "/server.pem", ext = dir + "/server.ext";
  ASSERT_NO_FATAL_FAILURE(
      OpenSsl({"req", "-x509", "-newkey", "ec", "-pkeyopt",
               "ec_paramgen_curve:P-256", "-nodes", "-keyout", ca_key, "-out",
               ca, "-days", "2", "-subj", "/CN=health test CA"}));
  WriteFile(ext, "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
  ASSERT_NO_FATAL_FAILURE(
      OpenSsl({"req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
               "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=gateway"}));
  ASSERT_NO_FATAL_FAILURE(OpenSsl({"x509", "-req", "-in", csr, "-CA", ca,
                                   "-CAkey", ca_key, "-CAcreateserial", "-out",
                                   cert, "-days", "2", "-extfile", ext}));
  const std::string clients = dir + "/clients";
  WriteFile(clients, absl::StrCat("payroll ", TokenDigest("tok-health-Zq81"),
                                  " payouts:write\n"));

  GatewayProcess gateway(
      "sandbox", dir + "/ledger.db",
      {"--tls_cert=" + cert, "--tls_key=" + key, "--clients=" + clients});
  ASSERT_FALSE(gateway.address().empty());
  const std::string port =
      gateway.address().substr(gateway.address().rfind(':') + 1);
  const std::string target = "--target=localhost:" + port;

  CommandResult tls = Health({target, "--tls_ca=" + ca});
  EXPECT_EQ(tls.exit_code, 0) << tls.out << tls.err;
  EXPECT_EQ(tls.out, "gateway: SERVING\n");

  // A token given anyway is neither read nor needed.
  CommandResult with_token_flag =
      Health({target, "--tls_ca=" + ca, "--token_file=" + dir + "/missing"},
             {std::string("--service=") + kPayoutService});
  EXPECT_EQ(with_token_flag.exit_code, 0)
      << with_token_flag.out << with_token_flag.err;

  CommandResult plaintext = Health({target});
  EXPECT_EQ(plaintext.exit_code, kUnavailable)
      << plaintext.out << plaintext.err;
}

TEST(PayoutctlHealthTest, UsageErrorsExitTwo) {
  EXPECT_EQ(Health({}, {"extra"}).exit_code, 2);
  EXPECT_EQ(Health({}, {"--state=ACCEPTED"}).exit_code, 2);
}

}  // namespace
}  // namespace aopay::testing
