#!/usr/bin/env python3
"""A centre files a dossier over HTTP: POST /v1/messages (docs/centres.md, "Sending and receiving").

Environment:
  LIENTHONG_URL       the bus's HTTP API, e.g. https://lienthong.example:8480
  LIENTHONG_KEY       the centre's API key (Authorization: Bearer …)
  LIENTHONG_UNIT      the centre's unit code, e.g. 000.20.59.H48 (the envelope's sender)
  LIENTHONG_MA_HO_SO  optional: the dossier code (default <unit>-<yyMMdd>-<random>)
  LIENTHONG_CA_FILE   optional: PEM file of the CA that signed the bus's certificate

Prints one JSON line, {"ma_ho_so", "message_id", "status": 202}, and exits 0 once the bus has
accepted the dossier; on a refusal prints the status and the problem+json body and exits 1.
"""

import json
import os
import sys
import time

import requests

from sample_dossier import birth_filing, new_ma_ho_so


def need(name):
    value = os.environ.get(name)
    if not value:
        sys.exit(f"{os.path.basename(sys.argv[0])}: set {name}")
    return value


def main():
    url = need("LIENTHONG_URL").rstrip("/")
    key = need("LIENTHONG_KEY")
    unit = need("LIENTHONG_UNIT")
    verify = os.environ.get("LIENTHONG_CA_FILE") or True
    ma_ho_so = new_ma_ho_so(unit)
    envelope = birth_filing(unit, ma_ho_so)
    headers = {
        "Authorization": f"Bearer {key}",
        # No message_id in the envelope: the bus gives one. The Idempotency-Key (your own record
        # id) makes a resend safe: the same key and body get the same message id, filed once.
        "Idempotency-Key": f"filing-{ma_ho_so}",
    }
    for attempt in range(1, 6):
        try:
            r = requests.post(f"{url}/v1/messages", json=envelope, headers=headers,
                              timeout=30, verify=verify)
        except (requests.ConnectionError, requests.Timeout) as e:
            # We do not know whether the bus got it: sending the same request again is safe.
            print(f"attempt {attempt}: {e}; sending again", file=sys.stderr)
            time.sleep(2 * attempt)
            continue
        if r.status_code in (429, 503) and attempt < 5:
            # Nothing was accepted (429), or it may have been (503 timeout): the same again.
            time.sleep(float(r.headers.get("Retry-After", 2)))
            continue
        break
    else:
        sys.exit("the bus did not answer; try again later (same Idempotency-Key)")

    if r.status_code != 202:
        # application/problem+json: type urn:lienthong:problem:<code>, title, detail, errors[].
        try:
            problem = r.json()
        except ValueError:
            problem = r.text
        print(json.dumps({"ma_ho_so": ma_ho_so, "status": r.status_code, "problem": problem}))
        sys.exit(1)
    print(json.dumps({"ma_ho_so": ma_ho_so, "message_id": r.json()["message_id"], "status": 202}))


if __name__ == "__main__":
    main()
