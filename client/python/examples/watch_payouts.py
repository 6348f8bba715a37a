#!/usr/bin/env python3
"""Follows payouts' state changes and prints each one, once, in order.

    python3 watch_payouts.py --target 127.0.0.1:50051
    python3 watch_payouts.py --target localhost:50443 --ca ca.crt \\
        --token-file payroll-svc.token --states SUCCEEDED FAILED REVERSED \\
        --cursor-file watch.cursor

The watch follows broken connections and gateway restarts by itself. With
--cursor-file the cursor of each event printed is stored there, and the
next run resumes after it: nothing is missed or printed twice across this
program's own restarts either (docs/client-retries.md, "Watching").
"""

import argparse
import os
import sys

from aopay_payouts import DEFAULT_WATCH_RETRY, PayoutClient, PayoutError
from aopay_payouts import state_name


def read_cursor(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        return ""


def store_cursor(path, cursor):
    """Replaces the file at once, so that a crash leaves the old cursor or
    the new one, never half of one."""
    with open(path + ".tmp", "w") as f:
        f.write(cursor + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", default=os.environ.get(
        "PAYOUT_TARGET", "127.0.0.1:50051"))
    parser.add_argument("--ca", help="CA bundle (PEM) of the gateway's TLS")
    parser.add_argument("--cert", help="client certificate (PEM), for mTLS")
    parser.add_argument("--key", help="client private key (PEM), for mTLS")
    parser.add_argument("--token-file", help="file holding a bearer token")
    parser.add_argument("--states", nargs="*", default=[],
                        help="only changes into these states (default: all)")
    parser.add_argument("--after", default=None,
                        help="resume after this cursor (default: the "
                        "--cursor-file's, else from now on)")
    parser.add_argument("--cursor-file",
                        help="store each event's cursor here; resume from it")
    parser.add_argument("--count", type=int, default=0,
                        help="stop after this many events (default: never)")
    args = parser.parse_args()

    token = None
    if args.token_file:
        with open(args.token_file) as f:
            token = f.read().strip()
    after = args.after
    if after is None:
        after = read_cursor(args.cursor_file) if args.cursor_file else ""

    def log_retry(attempt, error, delay):
        print("watch broke (%s); reconnecting in %.1f s" % (error, delay),
              file=sys.stderr)

    with PayoutClient(args.target, root_certificates=args.ca,
                      certificate_chain=args.cert, private_key=args.key,
                      token=token) as client:
        try:
            with client.watch_payouts(
                    states=args.states, after_cursor=after,
                    retry=DEFAULT_WATCH_RETRY.with_on_retry(log_retry)) \
                    as watch:
                print("watching after cursor %s" % (watch.cursor or "-"),
                      file=sys.stderr)
                seen = 0
                for event in watch:
                    payout = event.payout
                    print("%s %s: %s -> %s (%d paise, %s)" % (
                        event.event_time.ToJsonString(), payout.payout_id,
                        state_name(event.previous_state),
                        state_name(payout.state), payout.amount_paise,
                        payout.transaction_id or "no transaction yet"),
                        flush=True)
                    if args.cursor_file:
                        store_cursor(args.cursor_file, watch.cursor)
                    seen += 1
                    if args.count and seen >= args.count:
                        break
        except KeyboardInterrupt:
            return 130  # leaving the with blocks closed the watch
        except PayoutError as error:
            print("watch ended:", error, file=sys.stderr)
            if error.reason == "CURSOR_EXPIRED":
                print("events after the cursor were deleted by retention: "
                      "read what was missed with list_payouts, then watch "
                      "again without a cursor", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
