#!/usr/bin/env python3
"""A centre answers a payment notice. In a land dossier (1.010059, filed without a receiver) Tax
issues a notice of the land financial obligations; the bus passes it to the centre as a
dossier.status 6 whose payload.data.thong_bao_nop_tien holds it (so_thong_bao,
tong_so_tien_vnd, han_nop, …). Once the citizen has paid, the centre answers with a
dossier.forward WITHOUT receiver carrying the receipt in payload.data.chung_tu_nop_tien; the bus
hands it to Tax, which confirms, and the result comes back (docs/centres.md, "Filing without a
receiver").

This example reads the centre's queue over HTTP (centre_read_inbox_http.py), answers each notice
over POST /v1/messages at once, as if the citizen had paid in full today, and acknowledges the
notice only after the bus accepted the answer. Other messages are printed and acknowledged.

Environment: as centre_read_inbox_http.py (LIENTHONG_URL, LIENTHONG_KEY, LIENTHONG_SEEN_FILE,
LIENTHONG_IDLE_EXIT_S, LIENTHONG_CA_FILE).

Prints the lines of centre_read_inbox_http.py, and for each notice answered {"event":
"answered", "ma_ho_so", "notice", "message_id", "status": 202}.
"""

import json
import os
import signal
import sys
from datetime import datetime, timedelta, timezone

from centre_read_inbox_http import Bus, Refused, print_it, read_inbox, stop
from seen import Seen

VN = timezone(timedelta(hours=7))


def payment_receipt(notice):
    """The receipt of payment. In your software the officer records it from the citizen's
    receipt (State Treasury, bank, the national portal's payment); here it is made up."""
    return {
        "so_thong_bao": notice["so_thong_bao"],
        "so_chung_tu": f"NT-{notice['so_thong_bao']}",
        "ngay_nop": datetime.now(VN).strftime("%Y-%m-%d"),
        "so_tien_vnd": notice["tong_so_tien_vnd"],
    }


def answer_notice(bus, status):
    payload = status.get("payload") or {}
    notice = (payload.get("data") or {}).get("thong_bao_nop_tien")
    if not notice:
        raise ValueError("a status 6 without thong_bao_nop_tien")
    answer = {
        "spec": "lienthong.envelope/1",
        "kind": "dossier.forward",
        "ma_ho_so": status["ma_ho_so"],
        "ma_tthc": status["ma_tthc"],
        "sender": status["receiver"],  # our own unit code
        # No receiver: the bus runs this dossier's route and gives it back to Tax.
        "sent_at": datetime.now(VN).isoformat(timespec="seconds"),
        "correlation_id": status["correlation_id"],
        "causation_id": status["message_id"],
        "payload": {"data": {"chung_tu_nop_tien": payment_receipt(notice)}},
    }
    # One answer per notice: a resend after a lost 202 (or after this notice comes again) gets
    # the same message id and is filed once.
    r = bus.call("POST", "/v1/messages", json=answer,
                 headers={"Idempotency-Key": f"payment-{status['message_id']}"})
    print(json.dumps({"event": "answered", "ma_ho_so": status["ma_ho_so"],
                      "notice": notice["so_thong_bao"], "message_id": r.json()["message_id"],
                      "status": r.status_code}), flush=True)


def main():
    signal.signal(signal.SIGTERM, stop)
    bus = Bus()

    def handle(envelope, redelivered):
        print_it(envelope, redelivered)
        if envelope.get("kind") == "dossier.status" and envelope.get("status") == 6:
            answer_notice(bus, envelope)  # raises if refused: the notice is not acknowledged

    seen = Seen(os.environ.get("LIENTHONG_SEEN_FILE"))
    idle_exit = float(os.environ.get("LIENTHONG_IDLE_EXIT_S") or 0)
    try:
        handled, duplicates = read_inbox(bus, handle, seen, idle_exit)
    except Refused as e:
        sys.exit(str(e))
    print(json.dumps({"event": "done", "handled": handled, "duplicates": duplicates}), flush=True)


if __name__ == "__main__":
    main()
