#!/usr/bin/env python3
"""govbus agency starter kit for Python: pika + fastavro + cryptography.

Consumes your agency's queue with the account `govbus provision` gave you, verifies the
platform's batch signature on every delivery (a salted leaf, its RFC 9162 inclusion path to
the batch root, and the platform's Ed25519 signature over a statement naming your agency as
the audience; DESIGN.md, "Batch signatures"), decodes the Avro single-object body with the
writer schema named by its fingerprint (fetched once from the router's /schemas/{fingerprint}),
prints the record as one JSON line, and acks. A delivery that does not verify or decode is
rejected without requeue: RabbitMQ dead-letters it to agency.<id>.dlq. After a platform key
rotation it trusts the new key once the key you were provisioned with endorsed it (read from
the router's /keys), so there is nothing to re-provision.

    pip install pika==1.3.2 fastavro==1.12.1 cryptography
    python3 agency.py --env-file provisioned/agencies/civil.env

Copy this file and replace handle() with what your agency does with a record: it is called once
per verified record, and the delivery is acked only after it returns.
"""
import argparse
import base64
import binascii
import hashlib
import io
import json
import os
import re
import sys
import time
import urllib.request
from datetime import datetime, timezone

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


class PlatformKeys:
    """The platform keys this agency trusts: the provisioned one, and each later key that a
    trusted key endorsed (read from the router's /keys at most every 10 s when a delivery names
    a key id it does not know), so a platform key rotation needs no re-provisioning and a forged
    /keys answer gains nothing. A key past its valid_until verifies nothing."""

    ENDORSEMENT_ID = "govbus-key-endorsement"

    def __init__(self, public_key_b64, key_id, router_url):
        raw = base64.b64decode(public_key_b64)
        self.router_url = router_url.rstrip("/")
        # key id -> (public key, raw bytes, valid_until or None)
        self.keys = {}
        self.anonymous = None  # older env files name no key id
        if key_id:
            self.keys[key_id] = (Ed25519PublicKey.from_public_bytes(raw), raw, None)
        else:
            self.anonymous = (Ed25519PublicKey.from_public_bytes(raw), raw)
        self.learned_at = 0.0
        # (key id, public key, statement, signature) already verified: the rest of a batch
        # costs its hashes only. Bounded; a key past its valid_until is refused before this.
        self.verified = set()

    def learn(self):
        if time.monotonic() - self.learned_at < 10:
            return
        self.learned_at = time.monotonic()
        with urllib.request.urlopen(f"{self.router_url}/keys", timeout=10) as resp:
            listed = json.load(resp).get("keys", [])

        def until(entry):
            u = entry.get("valid_until")
            if not u:
                return None
            # RFC 3339; Python before 3.11 reads at most 6 fractional digits and no "Z".
            return datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", u.replace("Z", "+00:00")))

        if self.anonymous is not None:
            key, raw = self.anonymous
            for entry in listed:
                if base64.b64decode(entry["public_key"]) == raw:
                    self.keys[entry["key_id"]] = (key, raw, None)
                    self.anonymous = None
                    break
        for entry in listed:
            known = self.keys.get(entry["key_id"])
            if known and base64.b64decode(entry["public_key"]) == known[1]:
                self.keys[entry["key_id"]] = (known[0], known[1], until(entry))
        grew = True
        while grew:
            grew = False
            for entry in listed:
                e = entry.get("endorsement")
                if entry["key_id"] in self.keys or not e:
                    continue
                if e["key_id"] != entry["key_id"] or e["public_key"] != entry["public_key"]:
                    continue
                endorser = self.keys.get(e["endorsed_by"])
                if endorser is None:
                    continue
                raw = base64.b64decode(e["public_key"])
                try:
                    endorser[0].verify(
                        base64.b64decode(e["signature"]),
                        signed_bytes(self.ENDORSEMENT_ID, e["key_id"], 0, "upsert", raw),
                    )
                except InvalidSignature:
                    continue
                self.keys[entry["key_id"]] = (Ed25519PublicKey.from_public_bytes(raw), raw, until(entry))
                grew = True

    def verify(self, key_id, signature, data):
        """Raises ValueError unless a trusted key in force signed `data`."""
        if key_id not in self.keys and key_id is not None:
            try:
                self.learn()
            except OSError as e:
                print(f"cannot read {self.router_url}/keys: {e}", file=sys.stderr)
        entry = self.keys.get(key_id)
        if entry is not None:
            key, raw, valid_until = entry
            if valid_until is not None and datetime.now(timezone.utc) > valid_until:
                raise ValueError(f"signed with platform key {key_id}, which expired at {valid_until.isoformat()}")
            seen = (key_id, raw, data, signature)
            if seen in self.verified:
                return
            try:
                key.verify(signature, data)
                if len(self.verified) >= 16384:
                    self.verified.clear()
                self.verified.add(seen)
                return
            except InvalidSignature:
                raise ValueError("the platform signature does not verify (the message was altered)") from None
        if self.anonymous is not None:
            try:
                self.anonymous[0].verify(signature, data)
                return
            except InvalidSignature:
                pass
        raise ValueError(
            f"the platform signature does not verify with a platform key this agency trusts (key id {key_id}): "
            "wrong platform key, an unendorsed key, or the message was altered"
        )


def header(headers, name):
    value = headers.get(name)
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if value is None:
        raise ValueError(f"no {name} header")
    return value


def signed_bytes(message_id, item, version, op, body):
    """What a key endorsement signs: message_id LF item LF version LF op LF body."""
    return f"{message_id}\n{item}\n{version}\n{op}\n".encode("utf-8") + body


def delivery_bytes(message_id, item, version, op, grant, grant_revision, body):
    """What a delivery's leaf covers: message_id LF item LF version LF op LF grant LF grant
    revision LF body."""
    return f"{message_id}\n{item}\n{version}\n{op}\n{grant}\n{grant_revision}\n".encode("utf-8") + body


MAX_BATCH = 1024
BATCH_RE = re.compile(r"^(0|[1-9][0-9]{0,4})/(0|[1-9][0-9]{0,4})$")


def b64(value, name):
    """Base64 in the standard alphabet with padding, decoded strictly."""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"malformed {name}") from None


def sha256(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.digest()


def root_from_path(index, size, leaf, path):
    """The root a leaf at `index` of a tree of `size` leads to along `path` (RFC 9162
    §2.1.3.2), or None when the path is too short or too long."""
    if index >= size:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = sha256(b"\x01", p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = sha256(b"\x01", r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def batch_statement(headers, key_id, audience, signed):
    """The statement a delivery's batch signature must cover, rebuilt from its salt, leaf
    index, tree size and path; raises ValueError when the seal is malformed."""
    salt = b64(header(headers, "govbus-salt"), "govbus-salt")
    if len(salt) != 16:
        raise ValueError("malformed govbus-salt")
    m = BATCH_RE.match(header(headers, "govbus-batch"))
    if not m:
        raise ValueError("malformed govbus-batch")
    index, size = int(m.group(1)), int(m.group(2))
    if size == 0 or size > MAX_BATCH:
        raise ValueError(f"a batch of {size} messages")
    raw = b64(header(headers, "govbus-proof"), "govbus-proof")
    if len(raw) % 32:
        raise ValueError("malformed govbus-proof")
    path = [raw[i:i + 32] for i in range(0, len(raw), 32)]
    root = root_from_path(index, size, sha256(b"\x00", salt, signed), path)
    if root is None:
        raise ValueError("an inclusion path of the wrong length")
    return f"govbus-batch-v1\n{key_id}\n{audience}\n{size}\n{root.hex()}".encode("utf-8")


def decode(properties, body, platform_keys, schemas, agency):
    """Verifies and decodes one delivery; raises ValueError when it must be dead-lettered."""
    headers = properties.headers or {}
    message_id = properties.message_id
    if not message_id:
        raise ValueError("no message_id")
    item = header(headers, "govbus-item")
    version = int(header(headers, "govbus-version"))
    op = header(headers, "govbus-op")
    grant = header(headers, "govbus-grant")
    grant_revision = int(header(headers, "govbus-grant-revision"))
    key_id = header(headers, "govbus-key-id")
    signature = b64(header(headers, "govbus-signature"), "govbus-signature")
    signed = delivery_bytes(message_id, item, version, op, grant, grant_revision, body)
    # The audience is this agency: a batch signed for another recipient does not verify.
    statement = batch_statement(headers, key_id, agency, signed)
    platform_keys.verify(key_id, signature, statement)
    if body[:2] != MAGIC or len(body) < 10:
        raise ValueError("not an Avro single-object body")
    fingerprint = body[2:10].hex()
    schema = schemas.get(fingerprint)
    record = fastavro.schemaless_reader(io.BytesIO(body[10:]), schema)
    return {
        "message_id": message_id,
        "item": item,
        "grant": grant,
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
    ap.add_argument("--count", type=int, help="stop after this many deliveries (refused ones count)")
    ap.add_argument("--idle-seconds", type=float, help="stop when nothing arrives for this long")
    args = ap.parse_args()
    env = read_env_file(args.env_file)
    amqp_url = args.amqp_url or env["GOVBUS__AMQP__URL"]
    router_url = args.router_url or env.get("GOVBUS_ROUTER_URL", "http://127.0.0.1:9200")
    queue = env["GOVBUS_QUEUE"]
    agency = env["GOVBUS_AGENCY"]
    platform_keys = PlatformKeys(env["GOVBUS_PLATFORM_PUBLIC_KEY"], env.get("GOVBUS_PLATFORM_KEY_ID"), router_url)
    schemas = Schemas(router_url)

    # A cluster's nodes, comma-separated: pika connects to the first that answers. When the
    # connection is lost (its node stopped), the kit connects again, starting at the next node;
    # the deliveries it had not acked come again, under the same message ids.
    nodes = [pika.URLParameters(u.strip()) for u in amqp_url.split(",") if u.strip()]
    state = {"seen": 0}
    start = 0
    while True:
        try:
            connection = pika.BlockingConnection(nodes[start:] + nodes[:start])
        except pika.exceptions.AMQPConnectionError as e:
            print(f"no RabbitMQ node answers ({e!r}); trying again in 1 s", file=sys.stderr)
            time.sleep(1)
            continue
        try:
            finished = consume(connection, queue, args, platform_keys, schemas, agency, state)
        except (pika.exceptions.AMQPConnectionError, pika.exceptions.ChannelClosedByBroker) as e:
            if isinstance(e, pika.exceptions.ChannelClosedByBroker) and e.reply_code in (403, 404):
                raise  # not allowed, or no such queue: connecting again will not help
            print(f"lost the connection to RabbitMQ ({e!r}); connecting again through the next node",
                  file=sys.stderr)
            start = (start + 1) % len(nodes)
            time.sleep(1)
            continue
        if finished:
            return


def consume(connection, queue, args, platform_keys, schemas, agency, state):
    """Consumes until --count or --idle-seconds (True), or Ctrl-C; closes cleanly."""
    channel = connection.channel()
    channel.basic_qos(prefetch_count=100)
    try:
        for method, properties, body in channel.consume(queue, inactivity_timeout=args.idle_seconds):
            if method is None:  # idle
                break
            if (properties.headers or {}).get("govbus-kind") in ("checkpoint", b"checkpoint"):
                # A signed head of your ledger chain (govbus ledger verify --checkpoints);
                # keep it if you audit the platform (govbus-agency tail --checkpoints DIR does).
                channel.basic_ack(method.delivery_tag)
                continue
            try:
                delivery = decode(properties, body, platform_keys, schemas, agency)
            except (ValueError, KeyError) as e:
                print(f"rejected {properties.message_id}: {e} (dead-lettered to {queue}.dlq)", file=sys.stderr)
                channel.basic_reject(method.delivery_tag, requeue=False)
            else:
                handle(delivery)
                channel.basic_ack(method.delivery_tag)
            state["seen"] += 1
            if args.count is not None and state["seen"] >= args.count:
                break
    except KeyboardInterrupt:
        pass
    # Cancel first: the queue applies the acks before the cancel (on a bare close, RabbitMQ
    # 3.10 could put the last acked deliveries back; they would come again).
    channel.cancel()
    connection.close()
    return True

if __name__ == "__main__":
    main()
