#!/usr/bin/env python3
"""Sends one payout through the gateway and prints what became of it.

    python3 send_payout.py --target 127.0.0.1:50051
    python3 send_payout.py --target localhost:50443 --ca ca.crt \\
        --token-file payroll-svc.token --amount-paise 1200 --mode NEFT

Against a gateway on the built-in sandbox (`payout-server`, the default)
no money moves. Pass --request-id to retry a payout you sent before: the
gateway never sends one request id twice.
"""

import argparse
import os
import sys

from aopay_payouts import DEFAULT_RETRY, PayoutClient, PayoutError
from aopay_payouts import new_request_id, state_name


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", default=os.environ.get(
        "PAYOUT_TARGET", "127.0.0.1:50051"))
    parser.add_argument("--ca", help="CA bundle (PEM) of the gateway's TLS")
    parser.add_argument("--cert", help="client certificate (PEM), for mTLS")
    parser.add_argument("--key", help="client private key (PEM), for mTLS")
    parser.add_argument("--token-file", help="file holding a bearer token")
    parser.add_argument("--request-id", default=None,
                        help="retry this request id (default: a new one)")
    parser.add_argument("--account", default="100000011836")
    parser.add_argument("--ifsc", default="SBIN0000002")
    parser.add_argument("--name", default="Dean Jon")
    parser.add_argument("--email", default="abc@gmail.com")
    parser.add_argument("--mobile", default="9959640000")
    parser.add_argument("--amount-paise", type=int, default=1234)
    parser.add_argument("--mode", default="IMPS", choices=["IMPS", "NEFT"])
    args = parser.parse_args()

    token = None
    if args.token_file:
        with open(args.token_file) as f:
            token = f.read().strip()
    # Store the request id with your own record of the payment *before*
    # sending, so that a crash of this program can be retried with it.
    request_id = args.request_id or new_request_id()
    print("request id:", request_id)

    def log_retry(attempt, error, delay):
        print("attempt %d failed (%s); retrying in %.1f s" %
              (attempt, error, delay), file=sys.stderr)

    with PayoutClient(args.target, root_certificates=args.ca,
                      certificate_chain=args.cert, private_key=args.key,
                      token=token,
                      retry=DEFAULT_RETRY.with_on_retry(log_retry)) as client:
        try:
            payout = client.create_payout(
                request_id=request_id,
                beneficiary={"account_number": args.account,
                             "ifsc": args.ifsc, "name": args.name,
                             "email": args.email, "mobile": args.mobile},
                amount_paise=args.amount_paise, mode=args.mode)
        except PayoutError as error:
            print("payout failed:", error, file=sys.stderr)
            if error.outcome_unknown:
                print("AOPay may have the payout (%s). Do not send it again "
                      "under a new request id: refresh it, or have an "
                      "operator resolve it." % error.payout_id,
                      file=sys.stderr)
            elif error.code.name == "DEADLINE_EXCEEDED" and not error.reason:
                print("no answer in time; send again with --request-id %s "
                      "to learn the outcome" % request_id, file=sys.stderr)
            return 1

    print("payout %s: %s, AOPay transaction %s" %
          (payout.payout_id, state_name(payout.state),
           payout.transaction_id or "-"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
