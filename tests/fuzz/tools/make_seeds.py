#!/usr/bin/python3
"""Writes the seed corpora in corpus/<target>/ (run from anywhere).

Seeds are the documented AOPay answers and error bodies (docs/aopay.md),
the sandbox's scripted answers (server/sandbox/), valid requests and
option values. Re-run after editing; the files are committed.
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "..", "corpus")

DOCUMENTED_SUCCESS = {
    "initiateAuthGenericFundTransferAPIResp": {
        "metaData": {"status": "SUCCESS",
                     "message": "fundTransfer successfully processed",
                     "version": "v1", "time": "2025-02-25T06:42:43.469Z"},
        "resourceData": {"status": "ACPT",
                         "transactionReferenceNo": "505914786331",
                         "transactionID": "TERF920898",
                         "beneficiaryName": "ABC"},
    },
    "statuss": "SUCCESS",
    "message": "fundTransfer successfully processed",
    "value": "",
}
DOCUMENTED_ERRORS = {
    "403": "APIs not enabled. Please reach out to care@AOP.com",
    "409": "Beneficiary Id already exists",
    "412": "Post data is empty or not a valid JSON",
    "422": "Please provide a valid Bank IFSC code.",
}
HTML_500 = ("<!DOCTYPE html>\n<html><head><title>500 Internal Server Error"
            "</title></head>\n<body><h1>Internal Server Error</h1></body>"
            "</html>\n")


def success_with(resource_data):
    answer = json.loads(json.dumps(DOCUMENTED_SUCCESS))
    answer["initiateAuthGenericFundTransferAPIResp"]["resourceData"] = (
        resource_data)
    return answer


def error_body(sub_code, message):
    return {"status": "ERROR", "subCode": sub_code, "message": message}


def write(target, name, data):
    directory = os.path.join(CORPUS, target)
    os.makedirs(directory, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


def answer(status, body, cut=""):
    """cut: "" whole, "t" longer than 1 MiB and cut, "c" cut by the connection."""
    if not isinstance(body, str):
        body = json.dumps(body)
    return f"{status}{cut}\n{body}"


def payout_answers():
    t = "payout_answer"
    write(t, "documented_success", answer(200, DOCUMENTED_SUCCESS))
    for code, message in DOCUMENTED_ERRORS.items():
        write(t, f"error_{code}", answer(code, error_body(code, message)))
        write(t, f"error_{code}_http200",
              answer(200, error_body(code, message)))
    write(t, "error_numeric_subcode", answer(200, error_body(422, "x")))
    write(t, "error_unknown_subcode", answer(400, error_body("E17", "Low")))
    write(t, "http429_empty", answer(429, ""))
    write(t, "http429_success", answer(429, DOCUMENTED_SUCCESS))
    write(t, "http500_html", answer(500, HTML_500))
    write(t, "truncated_success", answer(200, DOCUMENTED_SUCCESS, "t"))
    write(t, "cut_off_success", answer(200, DOCUMENTED_SUCCESS, "c"))
    write(t, "success_acsc", answer(200, success_with(
        {"status": "ACSC", "transactionID": "TERF1"})))
    write(t, "success_rjct", answer(200, success_with(
        {"status": "RJCT", "transactionID": "TERF2"})))
    write(t, "success_no_transaction_id",
          answer(200, success_with({"status": "ACPT"})))
    write(t, "error_with_transaction_id", answer(200, {
        "status": "ERROR", "subCode": "422", "transactionID": "TERF3"}))
    write(t, "success_padded_word", answer(200, success_with(
        {"status": " " * 60 + "ACPT\t", "transactionID": "TERF5"})))
    # Found by fuzzing: a plain 429 that repeats a name nothing reads is
    # still "not sent" (json.dumps cannot write a repeated name).
    write(t, "http429_repeated_name",
          '429\n{"message": "slow down", "version": "v1", "version": "v1"}')
    write(t, "success_wrappers_disagree", answer(200, {
        "statuss": "SUCCESS",
        "a": {"resourceData": {"status": "ACPT", "transactionID": "TERF6"}},
        "b": {"resourceData": {"status": "RJCT", "transactionID": "TERF6"}}}))
    # A 429 or an error that shows the payout was taken, anywhere in it,
    # and an error body on a redirect: UNKNOWN.
    write(t, "http429_reference_in_resource_data", answer(429, {
        "resourceData": {"status": "SUCCESS",
                         "transactionReferenceNo": "505914786331"}}))
    write(t, "http429_refusal_words", answer(429, {
        "status": "ERROR", "statuss": "FAILED",
        "metaData": {"status": "ERROR"}, "resourceData": {"status": "RJCT"}}))
    write(t, "error_deep_transaction_id", answer(200, {
        "status": "ERROR", "x": [{"y": {"transactionID": "TERF7"}}]}))
    write(t, "error_on_redirect", answer(301, error_body(422, "moved")))
    write(t, "top_level_resource_data", answer(201, {
        "statuss": "success", "resourceData": {
            "status": "PENDING", "transactionID": "TERF4",
            "transactionReferenceNo": 505914786331}}))


def status_answers():
    t = "status_answer"
    # The sandbox's status answers (server/sandbox/sandbox.cc StatusBody).
    for word in ("ACPT", "SUCCESS", "FAILED", "REVERSED"):
        body = {"status": "SUCCESS",
                "message": "Transaction status fetched successfully",
                "resourceData": {"transactionID": "TERF920898",
                                 "transactionReferenceNo": "505914786331",
                                 "transactionStatus": word}}
        write(t, f"sandbox_{word.lower()}",
              f"200\nTERF920898\n{json.dumps(body)}")
    write(t, "wrapped_status", "200\nTERF920898\n" + json.dumps(
        {"initiateAuthGenericFundTransferAPIResp": {
            "resourceData": {"status": "ACSC",
                             "transactionID": "TERF920898"}}}))
    write(t, "top_level_own_id", "200\nTERF920898\n" + json.dumps(
        {"transactionID": "TERF920898", "status": "RJCT"}))
    write(t, "top_level_other_id", "200\nTERF920898\n" + json.dumps(
        {"transactionID": "TERF000001", "status": "SUCCESS"}))
    write(t, "top_level_no_id", "200\nTERF920898\n" + json.dumps(
        {"statuss": "SUCCESS", "message": "done"}))
    write(t, "error_body", "200\nTERF920898\n" + json.dumps(
        error_body("412", DOCUMENTED_ERRORS["412"])))
    write(t, "http500", f"500\nTERF920898\n{HTML_500}")
    write(t, "unknown_word", "200\nTERF920898\n" + json.dumps(
        {"resourceData": {"status": "ON_HOLD"}}))
    # Found by fuzzing: an id read with a trailing CR; a known word padded
    # past the 64 bytes a status word is kept to.
    write(t, "own_id_with_trailing_cr", "200\nTERF920898\r\n" + json.dumps(
        {"transactionID": "TERF920898", "status": "RJCT"}))
    write(t, "padded_word", "200\nTERF920898\n" + json.dumps(
        {"resourceData": {"transactionStatus": " " * 60 + "REVERSED"}}))
    # A name repeated in one object (json.dumps cannot write one): not
    # understood.
    write(t, "repeated_word", "200\nTERF920898\n"
          '{"resourceData":{"status":"SUCCESS","status":"FAILED"}}')
    # Two wrappers that disagree: not understood.
    write(t, "wrappers_disagree", "200\nTERF920898\n" + json.dumps(
        {"resourceData": {"status": "SUCCESS"},
         "x": {"resourceData": {"status": "FAILED"}}}))


def varint(value):
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number, wire_type, payload):
    key = varint((number << 3) | wire_type)
    if wire_type == 2:
        return key + varint(len(payload)) + payload
    return key + payload


def request(request_id, account, ifsc, name, email, mobile, paise, mode):
    beneficiary = b"".join(field(n, 2, v.encode()) for n, v in
                           enumerate([account, ifsc, name, email, mobile], 1))
    return (field(1, 2, request_id.encode()) + field(2, 2, beneficiary) +
            field(3, 0, varint(paise)) + field(4, 0, varint(mode)))


def payout_requests():
    t = "payout_request"
    neft, imps = 1, 2
    write(t, "documented_example", request(
        "3f1c2a9e-5b7d-4e8a-9c0f-1a2b3c4d5e6f", "100000011836",
        "SBIN0000002", "Dean Jon", "abc@gmail.com", "9959640000", 1234, imps))
    write(t, "needs_normalising", request(
        "req_2", " 123456789 ", " sbin0000002 ", "  O'Brien & Sons-Ltd. ",
        " a.b@example.co.in ", "+919959640000", 100_000_000, neft))
    write(t, "mobile_leading_zero", request(
        "req-3", "123456789012345678", "HDFC0ABC123", "A", "x@y.z",
        "09959640000", 50_000_000, imps))
    write(t, "sandbox_scripted_0422", request(
        "req-4", "100000010422", "SBIN0000002", "Dean Jon", "abc@gmail.com",
        "6000000000", 1, neft))
    write(t, "invalid_everything", request(
        "", "12ab", "SBIN1000002", "Dean\x01Jon", "no-at", "5000000000",
        -5, 0))
    write(t, "imps_over_limit", request(
        "req-6", "100000011836", "SBIN0000002", "Dean Jon", "abc@gmail.com",
        "9959640000", 50_000_001, imps))


def money():
    t = "money"
    for text in ("12.34", "0.05", "0", "007.50", "12.3", "12.", ".5",
                 "92233720368547758.07", "92233720368547758.08", "1e3",
                 "-1.00"):
        write(t, "text_" + text.replace(".", "_").replace("-", "neg"), text)
    for name, paise in (("zero", 0), ("one_paisa", 1), ("max", 2**63 - 1),
                        ("min", -2**63), ("minus_one", -1),
                        ("imps_limit", 50_000_000)):
        write(t, "int_" + name, (paise & (2**64 - 1)).to_bytes(8, "little"))


def config():
    t = "config"
    for name, value in (
            ("ledger_default", "ledger\nsqlite:payouts.db"),
            ("ledger_nosync", "ledger\nsqlite:/var/lib/payout/p.db?synchronous=off"),
            ("ledger_full", "ledger\nsqlite:p.db?synchronous=full"),
            ("ledger_postgres", "ledger\npostgresql://u@h:5432/db"),
            ("listen_default", "listen\n127.0.0.1:50051"),
            ("listen_v6", "listen\n[::1]:0"),
            ("listen_name", "listen\nlocalhost:9464"),
            ("duration_30s", "duration\n30s"),
            ("duration_mixed", "duration\n1h2m3.5s"),
            ("duration_ms", "duration\n250ms"),
            ("duration_inf", "duration\ninf")):
        write(t, name, value)


def main():
    payout_answers()
    status_answers()
    payout_requests()
    money()
    config()
    return 0


if __name__ == "__main__":
    sys.exit(main())
