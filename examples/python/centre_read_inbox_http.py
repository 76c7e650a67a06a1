#!/usr/bin/env python3
"""A centre whose software does not speak AMQP reads its own queue over HTTP: GET /v1/inbox (a long
poll; each message leased), then POST /v1/inbox/ack once handled; deduplicated by message_id
(docs/centres.md, "Reading your queue over HTTP").

Environment:
  LIENTHONG_URL          the bus's HTTP API, e.g. https://lienthong.example:8480
  LIENTHONG_KEY          the centre's API key
  LIENTHONG_SEEN_FILE    optional: a file keeping the handled message ids across runs
  LIENTHONG_IDLE_EXIT_S  optional: stop after this many seconds without a message (default: run
                         until interrupted)
  LIENTHONG_CA_FILE      optional: PEM file of the CA that signed the bus's certificate

Prints one JSON line per message: {"event": "message", "message_id", "kind", "ma_ho_so",
"status", ...} when handled, {"event": "duplicate", "message_id"} when it was handled before;
then {"event": "done", "handled": n, "duplicates": m}.
"""

import json
import os
import signal
import sys
import time

import requests

from seen import Seen


def need(name):
    value = os.environ.get(name)
    if not value:
        sys.exit(f"{os.path.basename(sys.argv[0])}: set {name}")
    return value


class Refused(Exception):
    """An answer 4xx from the bus (problem+json)."""


class Bus:
    """The bus's HTTP API with the unit's key; waits and tries again on 429, 503 and lost
    connections (every request here is safe to repeat: acks, and messages with an
    Idempotency-Key)."""

    def __init__(self):
        self.url = need("LIENTHONG_URL").rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {need('LIENTHONG_KEY')}"
        self.session.verify = os.environ.get("LIENTHONG_CA_FILE") or True

    def call(self, method, path, **kwargs):
        for attempt in range(1, 11):
            try:
                r = self.session.request(method, self.url + path, timeout=60, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as e:
                print(f"{method} {path}: {e}; trying again", file=sys.stderr)
                time.sleep(min(2 * attempt, 30))
                continue
            if r.status_code in (429, 503):
                time.sleep(float(r.headers.get("Retry-After", 2)))
                continue
            if r.status_code >= 400:
                # problem+json: 401 wrong key, 409 this unit is reached by an adapter or webhook,
                # 422 a message refused (its `type` and `detail` say why).
                raise Refused(f"{method} {path}: HTTP {r.status_code}: {r.text}")
            return r
        raise Refused(f"{method} {path}: the bus did not answer")


def describe(envelope, redelivered):
    """What came, as one JSON object."""
    payload = envelope.get("payload") or {}
    line = {
        "event": "message",
        "message_id": envelope["message_id"],
        "kind": envelope.get("kind"),
        "ma_ho_so": envelope.get("ma_ho_so"),
        "sender": envelope.get("sender"),
        "status": envelope.get("status"),
        "redelivered": redelivered,
    }
    if envelope.get("kind") == "bus.dead_letter":
        # A message of ours the bus refused or could not deliver: causation_id names it.
        line["refused"] = envelope.get("causation_id")
    if payload.get("reason"):
        line["reason"] = payload["reason"]
    return line


def print_it(envelope, redelivered):
    """Store the message in your software. Here: print what came."""
    print(json.dumps(describe(envelope, redelivered)), flush=True)


def stop(*_):
    raise KeyboardInterrupt


def read_inbox(bus, handle, seen, idle_exit=0):
    """Read the queue until interrupted (or idle for `idle_exit` seconds), calling
    handle(envelope, redelivered) once per message_id. Returns (handled, duplicates)."""
    handled = duplicates = 0
    last = time.monotonic()
    wait = 30 if not idle_exit else max(1, min(30, int(idle_exit)))
    try:
        while True:
            # Up to 20 messages, waiting up to `wait` s for the first; each leased for 60 s.
            batch = bus.call("GET", f"/v1/inbox?wait={wait}&max=20&lease=60").json()
            if not batch["messages"]:
                if idle_exit and time.monotonic() - last >= idle_exit:
                    break
                continue
            last = time.monotonic()
            done = []
            for m in batch["messages"]:
                if m["message_id"] in seen:
                    duplicates += 1
                    print(json.dumps({"event": "duplicate", "message_id": m["message_id"]}),
                          flush=True)
                    done.append(m["lease_id"])
                    continue
                if not isinstance(m["envelope"], dict):
                    print(f"not an envelope, skipped: {m['envelope']!r:.200}", file=sys.stderr)
                    done.append(m["lease_id"])
                    continue
                try:
                    handle(m["envelope"], m["redelivered"])
                except Exception as e:  # not acknowledged: it comes again after its lease
                    print(f"{m['message_id']}: not handled: {e}", file=sys.stderr)
                    continue
                seen.add(m["message_id"])
                done.append(m["lease_id"])
                handled += 1
            if done:
                # Acknowledge only what is handled: the broker then removes it.
                answer = bus.call("POST", "/v1/inbox/ack", json={"lease_ids": done}).json()
                again = answer["expired"] + answer["unknown"]
                if again:
                    # The lease ran out first: those messages come again and are skipped above.
                    print(f"{len(again)} lease(s) ran out before the ack", file=sys.stderr)
    except KeyboardInterrupt:
        pass  # what is leased and not acknowledged goes back to the queue after its lease
    return handled, duplicates


def main():
    signal.signal(signal.SIGTERM, stop)
    bus = Bus()
    seen = Seen(os.environ.get("LIENTHONG_SEEN_FILE"))
    idle_exit = float(os.environ.get("LIENTHONG_IDLE_EXIT_S") or 0)
    try:
        handled, duplicates = read_inbox(bus, print_it, seen, idle_exit)
    except Refused as e:
        sys.exit(str(e))
    print(json.dumps({"event": "done", "handled": handled, "duplicates": duplicates}), flush=True)


if __name__ == "__main__":
    main()
