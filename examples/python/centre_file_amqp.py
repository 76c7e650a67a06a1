#!/usr/bin/env python3
"""A centre files a dossier over AMQP: publish to <prefix>.ingress (docs/centres.md, "Sending and
receiving"; schemas/asyncapi.yaml).

Environment:
  LIENTHONG_AMQP_URL  the broker as the centre's broker user, e.g.
                      amqps://son-ha:PASSWORD@broker.example:5671/%2f
  LIENTHONG_UNIT      the centre's unit code, e.g. 000.20.59.H48 (the envelope's sender)
  LIENTHONG_PREFIX    optional: the installation's [bus] prefix (default lienthong)
  LIENTHONG_MA_HO_SO  optional: the dossier code (default <unit>-<yyMMdd>-<random>)
  LIENTHONG_CA_FILE   optional: PEM file of the CA that signed the broker's certificate (amqps)

Prints one JSON line, {"ma_ho_so", "message_id", "published": "confirmed"}, once the broker has
confirmed the message. The bus checks it after that: a refusal comes back on the centre's queue
as a bus.dead_letter notice (see centre_read_queue_amqp.py).
"""

import json
import os
import ssl
import sys
import time
import uuid
from urllib.parse import urlparse

import pika

from sample_dossier import birth_filing, new_ma_ho_so


def need(name):
    value = os.environ.get(name)
    if not value:
        sys.exit(f"{os.path.basename(sys.argv[0])}: set {name}")
    return value


def uuid7():
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then random bits."""
    b = bytearray((time.time_ns() // 1_000_000).to_bytes(6, "big") + os.urandom(10))
    b[6] = (b[6] & 0x0F) | 0x70  # version 7
    b[8] = (b[8] & 0x3F) | 0x80  # variant 10
    return str(uuid.UUID(bytes=bytes(b)))


def connect(amqp_url):
    params = pika.URLParameters(amqp_url)
    ca = os.environ.get("LIENTHONG_CA_FILE")
    if urlparse(amqp_url).scheme == "amqps":
        context = ssl.create_default_context(cafile=ca)
        params.ssl_options = pika.SSLOptions(context, urlparse(amqp_url).hostname)
    return pika.BlockingConnection(params), params.credentials.username


def main():
    amqp_url = need("LIENTHONG_AMQP_URL")
    unit = need("LIENTHONG_UNIT")
    prefix = os.environ.get("LIENTHONG_PREFIX", "lienthong")
    ma_ho_so = new_ma_ho_so(unit)
    envelope = birth_filing(unit, ma_ho_so)
    envelope["message_id"] = uuid7()

    try:
        connection, broker_user = connect(amqp_url)
    except pika.exceptions.AMQPConnectionError as e:
        sys.exit(f"cannot connect to the broker (user, password, host, TLS?): {e!r}")
    channel = connection.channel()
    channel.confirm_delivery()  # basic_publish now waits for the broker's confirm
    properties = pika.BasicProperties(
        content_type="application/json",
        delivery_mode=pika.DeliveryMode.Persistent,
        message_id=envelope["message_id"],
        correlation_id=envelope["correlation_id"],
        type=envelope["kind"],
        # Required: the broker checks it is this connection's user, so the bus knows who sent it.
        user_id=broker_user,
    )
    try:
        channel.basic_publish(
            exchange=f"{prefix}.ingress",
            routing_key="",
            body=json.dumps(envelope, ensure_ascii=False).encode("utf-8"),
            properties=properties,
            mandatory=True,  # an unroutable message comes back instead of being dropped
        )
    except pika.exceptions.UnroutableError:
        sys.exit("the broker could not route the message (the ingress exchange has no binding): "
                 "tell the bus's operator; send it again later with the same message_id")
    except pika.exceptions.NackError:
        sys.exit("the broker refused the message; send it again later with the same message_id")
    finally:
        connection.close()
    print(json.dumps({"ma_ho_so": ma_ho_so, "message_id": envelope["message_id"],
                      "published": "confirmed"}))


if __name__ == "__main__":
    main()
