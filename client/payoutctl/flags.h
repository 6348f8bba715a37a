#ifndef AOPAY_CLIENT_PAYOUTCTL_FLAGS_H_
#define AOPAY_CLIENT_PAYOUTCTL_FLAGS_H_

// The flags of payoutctl, defined with their help text in main.cc. Which
// command each applies to is the command table's business (cli.h).

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/time/time.h"

// Global flags.
ABSL_DECLARE_FLAG(std::string, target);
ABSL_DECLARE_FLAG(bool, json);
ABSL_DECLARE_FLAG(absl::Duration, timeout);
ABSL_DECLARE_FLAG(std::string, token);
ABSL_DECLARE_FLAG(std::string, token_file);
ABSL_DECLARE_FLAG(std::string, tls_ca);
ABSL_DECLARE_FLAG(std::string, tls_cert);
ABSL_DECLARE_FLAG(std::string, tls_key);

// create (and get).
ABSL_DECLARE_FLAG(std::string, request_id);
ABSL_DECLARE_FLAG(std::string, account);
ABSL_DECLARE_FLAG(std::string, ifsc);
ABSL_DECLARE_FLAG(std::string, name);
ABSL_DECLARE_FLAG(std::string, email);
ABSL_DECLARE_FLAG(std::string, mobile);
ABSL_DECLARE_FLAG(std::string, amount);
ABSL_DECLARE_FLAG(std::optional<int64_t>, amount_paise);
ABSL_DECLARE_FLAG(std::string, mode);
ABSL_DECLARE_FLAG(std::vector<std::string>, metadata);
ABSL_DECLARE_FLAG(std::string, after);
ABSL_DECLARE_FLAG(int64_t, count);
ABSL_DECLARE_FLAG(std::string, from);
ABSL_DECLARE_FLAG(std::string, to);
ABSL_DECLARE_FLAG(std::string, csv);

// get, refresh, resolve.
ABSL_DECLARE_FLAG(std::string, payout_id);

// list (and resolve).
ABSL_DECLARE_FLAG(std::vector<std::string>, state);
ABSL_DECLARE_FLAG(int32_t, page_size);
ABSL_DECLARE_FLAG(std::string, page_token);
ABSL_DECLARE_FLAG(bool, all);

// resolve.
ABSL_DECLARE_FLAG(std::string, transaction_id);
ABSL_DECLARE_FLAG(std::string, note);

// batch.
ABSL_DECLARE_FLAG(std::string, file);

// webhook verify.
ABSL_DECLARE_FLAG(std::string, secret);
ABSL_DECLARE_FLAG(std::string, signature);
ABSL_DECLARE_FLAG(std::string, body);
ABSL_DECLARE_FLAG(absl::Duration, tolerance);

// health.
ABSL_DECLARE_FLAG(std::string, service);
ABSL_DECLARE_FLAG(bool, liveness);

#endif  // AOPAY_CLIENT_PAYOUTCTL_FLAGS_H_
