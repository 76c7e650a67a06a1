#!/usr/bin/env python3
"""A centre reads its own queue <prefix>.unit.<code> over AMQP: manual acks, at least once,
deduplicated by message_id (docs/centres.md, "Sending and receiving").

Environment:
  LIENTHONG_AMQP_URL     the broker as the centre's broker user (amqps://user:password@host:5671/%2f)
  LIENTHONG_UNIT         the centre's unit code, e.g. 000.20.59.H48
  LIENTHONG_PREFIX       optional: the installation's [bus] prefix (default lienthong)
  LIENTHONG_SEEN_FILE    optional: a file keeping the handled message ids across runs
  LIENTHONG_IDLE_EXIT_S  optional: stop after this many seconds without a message (default: run
                         until interrupted)
  LIENTHONG_CA_FILE      optional: PEM file of the CA that signed the broker's certificate (amqps)

Prints one JSON line per message: {"event": "message", "message_id", "kind", "ma_ho_so",
"status", ...} when handled, {"event": "duplicate", "message_id"} when it was handled before;
then {"event": "done", "handled": n, "duplicates": m}.
"""

import json
import os
import signal
import ssl
import sys
import time
from urllib.parse import urlparse

import pika

from seen import Seen


def need(name):
    value = os.environ.get(name)
    if not value:
        sys.exit(f"{os.path.basename(sys.argv[0])}: set {name}")
    return value


def handle(envelope, redelivered):
    """Store the message in your software. Here: print what came."""
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
        line["reason"] = payload.get("reason")
    elif payload.get("reason"):
        line["reason"] = payload["reason"]
    print(json.dumps(line), flush=True)


def connect(amqp_url):
    params = pika.URLParameters(amqp_url)
    if urlparse(amqp_url).scheme == "amqps":
        context = ssl.create_default_context(cafile=os.environ.get("LIENTHONG_CA_FILE"))
        params.ssl_options = pika.SSLOptions(context, urlparse(amqp_url).hostname)
    return pika.BlockingConnection(params)


def stop(*_):
    raise KeyboardInterrupt


def main():
    amqp_url = need("LIENTHONG_AMQP_URL")
    unit = need("LIENTHONG_UNIT")
    queue = f"{os.environ.get('LIENTHONG_PREFIX', 'lienthong')}.unit.{unit}"
    idle_exit = float(os.environ.get("LIENTHONG_IDLE_EXIT_S") or 0)
    seen = Seen(os.environ.get("LIENTHONG_SEEN_FILE"))
    signal.signal(signal.SIGTERM, stop)

    try:
        connection = connect(amqp_url)
    except pika.exceptions.AMQPConnectionError as e:
        sys.exit(f"cannot connect to the broker (user, password, host, TLS?): {e!r}")
    channel = connection.channel()
    channel.basic_qos(prefetch_count=20)  # at most 20 unacknowledged messages at a time
    handled = duplicates = 0
    last = time.monotonic()
    try:
        for method, properties, body in channel.consume(queue, inactivity_timeout=1):
            if method is None:  # nothing for a second
                if idle_exit and time.monotonic() - last >= idle_exit:
                    break
                continue
            last = time.monotonic()
            try:
                envelope = json.loads(body)
            except ValueError:
                envelope = None
            message_id = (envelope or {}).get("message_id") or properties.message_id
            if message_id in seen:
                # Delivered again (a lost ack, a reconnect, a resend): handled already.
                duplicates += 1
                print(json.dumps({"event": "duplicate", "message_id": message_id}), flush=True)
                channel.basic_ack(method.delivery_tag)
                continue
            if envelope is None:
                # The bus sends only envelopes; reject without requeue: the broker dead-letters
                # it, and the operator sees it.
                print(f"not JSON, rejected: {body[:200]!r}", file=sys.stderr)
                channel.basic_nack(method.delivery_tag, requeue=False)
                continue
            handle(envelope, method.redelivered)
            seen.add(message_id)
            # Acknowledge only once handled: until then the broker keeps the message.
            channel.basic_ack(method.delivery_tag)
            handled += 1
    except KeyboardInterrupt:
        pass
    finally:
        if connection.is_open:
            channel.cancel()  # what was prefetched and not acked goes back to the queue
            connection.close()
    print(json.dumps({"event": "done", "handled": handled, "duplicates": duplicates}), flush=True)


if __name__ == "__main__":
    main()
