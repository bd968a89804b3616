#!/usr/bin/env python3
"""govbus agency starter kit for Python: pika + fastavro + cryptography.

Consumes your agency's queue with the account `govbus provision` gave you, verifies the
platform's Ed25519 signature on every delivery, decodes the Avro single-object body with the
writer schema named by its fingerprint (fetched once from the router's /schemas/{fingerprint}),
prints the record as one JSON line, and acks. A delivery that does not verify or decode is
rejected without requeue: RabbitMQ dead-letters it to agency.<id>.dlq.

    pip install pika==1.3.2 fastavro==1.12.1 cryptography
    python3 agency.py --env-file provisioned/agencies/civil.env

Copy this file and replace handle() with what your agency does with a record: it is called once
per verified record, and the delivery is acked only after it returns.
"""
import argparse
import base64
import io
import json
import os
import sys
import urllib.request

import fastavro
import pika
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

MAGIC = b"\xc3\x01"


def read_env_file(path):
    """The KEY=VALUE lines of a provisioning file."""
    values = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                values[key.strip()] = value.strip()
    return values


class Schemas:
    """Writer schemas by fingerprint, fetched once each from the router."""

    def __init__(self, router_url):
        self.router_url = router_url.rstrip("/")
        self.cache = {}

    def get(self, fingerprint_hex):
        if fingerprint_hex not in self.cache:
            url = f"{self.router_url}/schemas/{fingerprint_hex}"
            with urllib.request.urlopen(url, timeout=10) as resp:
                self.cache[fingerprint_hex] = fastavro.parse_schema(json.load(resp))
        return self.cache[fingerprint_hex]


def header(headers, name):
    value = headers.get(name)
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if value is None:
        raise ValueError(f"no {name} header")
    return value


def signed_bytes(message_id, item, version, op, body):
    """What the platform signs: message_id LF item LF version LF op LF body."""
    return f"{message_id}\n{item}\n{version}\n{op}\n".encode("utf-8") + body


def decode(properties, body, platform_key, schemas):
    """Verifies and decodes one delivery; raises ValueError when it must be dead-lettered."""
    headers = properties.headers or {}
    message_id = properties.message_id
    if not message_id:
        raise ValueError("no message_id")
    item = header(headers, "govbus-item")
    version = int(header(headers, "govbus-version"))
    op = header(headers, "govbus-op")
    signature = base64.b64decode(header(headers, "govbus-signature"))
    try:
        platform_key.verify(signature, signed_bytes(message_id, item, version, op, body))
    except InvalidSignature:
        raise ValueError("the platform signature does not verify") from None
    if body[:2] != MAGIC or len(body) < 10:
        raise ValueError("not an Avro single-object body")
    fingerprint = body[2:10].hex()
    schema = schemas.get(fingerprint)
    record = fastavro.schemaless_reader(io.BytesIO(body[10:]), schema)
    return {
        "message_id": message_id,
        "item": item,
        "grant": header(headers, "govbus-grant"),
        "version": version,
        "op": op,
        "fingerprint": fingerprint,
        "record": record,
    }


def handle(delivery):
    """Your agency's work with one record. Here: print it as a JSON line."""
    print(json.dumps(delivery, ensure_ascii=False, default=str), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env-file", required=True, help="the file `govbus provision` wrote for your agency")
    ap.add_argument("--amqp-url", help="overrides GOVBUS__AMQP__URL of the env file")
    ap.add_argument("--router-url", help="overrides GOVBUS_ROUTER_URL of the env file")
    ap.add_argument("--count", type=int, help="stop after this many deliveries")
    ap.add_argument("--idle-seconds", type=float, help="stop when nothing arrives for this long")
    args = ap.parse_args()
    env = read_env_file(args.env_file)
    amqp_url = args.amqp_url or env["GOVBUS__AMQP__URL"]
    router_url = args.router_url or env.get("GOVBUS_ROUTER_URL", "http://127.0.0.1:9200")
    queue = env["GOVBUS_QUEUE"]
    platform_key = Ed25519PublicKey.from_public_bytes(base64.b64decode(env["GOVBUS_PLATFORM_PUBLIC_KEY"]))
    schemas = Schemas(router_url)

    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=100)
    seen = 0
    try:
        for method, properties, body in channel.consume(queue, inactivity_timeout=args.idle_seconds):
            if method is None:  # idle
                break
            if (properties.headers or {}).get("govbus-kind") in ("checkpoint", b"checkpoint"):
                # A signed head of your ledger chain (govbus ledger verify --checkpoints);
                # keep it if you audit the platform (govbus tail --checkpoints DIR does).
                channel.basic_ack(method.delivery_tag)
                continue
            try:
                delivery = decode(properties, body, platform_key, schemas)
            except (ValueError, KeyError) as e:
                print(f"rejected {properties.message_id}: {e} (dead-lettered to {queue}.dlq)", file=sys.stderr)
                channel.basic_reject(method.delivery_tag, requeue=False)
            else:
                handle(delivery)
                channel.basic_ack(method.delivery_tag)
            seen += 1
            if args.count is not None and seen >= args.count:
                break
    except KeyboardInterrupt:
        pass
    finally:
        channel.cancel()
        connection.close()


if __name__ == "__main__":
    main()
