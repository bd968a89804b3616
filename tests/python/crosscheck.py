"""Cross-language proof for govbus bus-schemas, with fastavro as the independent Avro implementation.

    python crosscheck.py SCHEMAS_DIR GOLDEN_DIR OUT_DIR

SCHEMAS_DIR holds what `govbus schemas export` wrote. GOLDEN_DIR holds <type>.json (natural JSON)
and <type>.bin (single-object bytes encoded by Rust). For every record type this script:
  1. computes the schema fingerprint itself (Parsing Canonical Form, CRC-64-AVRO),
  2. decodes the Rust bytes, finding the schema by the fingerprint in the header, and checks the
     result equals the golden JSON,
  3. encodes the golden JSON itself and writes OUT_DIR/<type>.bin for the Rust side to decode.
Prints a JSON summary; exits 1 on any mismatch.
"""
import base64
import datetime as dt
import io
import json
import os
import sys

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

MAGIC = b"\xc3\x01"
PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def natural(schema, value, named):
    """fastavro's decoded value -> the natural JSON form govbus uses."""
    if value is None:
        return None
    if isinstance(schema, list):
        branches = [b for b in schema if b != "null"]
        errors = []
        for b in branches:
            try:
                return natural(b, value, named)
            except (TypeError, ValueError, KeyError) as e:
                errors.append(e)
        raise TypeError(f"no branch fits {value!r}: {errors}")
    if isinstance(schema, str):
        if schema in PRIMITIVES:
            if schema == "bytes":
                return base64.b64encode(value).decode()
            return value
        return natural(named[schema], value, named)
    t = schema["type"]
    lt = schema.get("logicalType")
    if lt == "date":
        return value.isoformat()
    if lt == "timestamp-millis":
        v = value.astimezone(dt.timezone.utc)
        return v.strftime("%Y-%m-%dT%H:%M:%S.") + f"{v.microsecond // 1000:03d}Z"
    if t == "record":
        return {f["name"]: natural(f["type"], value.get(f["name"]), named) for f in schema["fields"]}
    if t == "array":
        return [natural(schema["items"], x, named) for x in value]
    if t == "map":
        return {k: natural(schema["values"], x, named) for k, x in value.items()}
    if isinstance(t, (dict, list)) or t in PRIMITIVES:
        return natural(t, value, named)
    return value


def datum(schema, value, named):
    """natural JSON -> a value fastavro writes."""
    if value is None:
        return None
    if isinstance(schema, list):
        return datum([b for b in schema if b != "null"][0], value, named) if len(schema) == 2 else value
    if isinstance(schema, str):
        if schema == "bytes":
            return base64.b64decode(value)
        if schema in PRIMITIVES:
            return value
        return datum(named[schema], value, named)
    lt = schema.get("logicalType")
    if lt == "date":
        return dt.date.fromisoformat(value)
    if lt == "timestamp-millis":
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    t = schema["type"]
    if t == "record":
        return {f["name"]: datum(f["type"], value.get(f["name"]), named) for f in schema["fields"]}
    if t == "array":
        return [datum(schema["items"], x, named) for x in value]
    if t == "map":
        return {k: datum(schema["values"], x, named) for k, x in value.items()}
    if isinstance(t, (dict, list)) or t in PRIMITIVES:
        return datum(t, value, named)
    return value


def collect_named(schema, named):
    if isinstance(schema, list):
        for b in schema:
            collect_named(b, named)
    elif isinstance(schema, dict):
        if schema.get("type") in ("record", "enum", "fixed"):
            named[schema["name"]] = schema
        for f in schema.get("fields", []):
            collect_named(f["type"], named)
        for k in ("items", "values"):
            if k in schema:
                collect_named(schema[k], named)
        if isinstance(schema.get("type"), (dict, list)):
            collect_named(schema["type"], named)


def main():
    schemas_dir, golden_dir, out_dir = sys.argv[1:4]
    os.makedirs(out_dir, exist_ok=True)
    by_fp, errors, decoded, encoded = {}, [], 0, 0
    for fname in sorted(os.listdir(schemas_dir)):
        with open(os.path.join(schemas_dir, fname), encoding="utf-8") as fh:
            raw = json.load(fh)
        parsed = fastavro.parse_schema(raw)  # fails loudly on a schema fastavro cannot read
        if "govbus.key" not in raw:
            continue
        fp = fingerprint(to_parsing_canonical_form(raw), "CRC-64-AVRO")
        named = {}
        collect_named(raw, named)
        by_fp[fp] = (raw["name"], raw, parsed, named)
    for full, raw, parsed, named in by_fp.values():
        with open(os.path.join(golden_dir, full + ".json"), encoding="utf-8") as fh:
            golden = json.load(fh)
        with open(os.path.join(golden_dir, full + ".bin"), "rb") as fh:
            body = fh.read()
        if body[:2] != MAGIC:
            errors.append(f"{full}: Rust body lacks the C3 01 marker")
            continue
        fp = body[2:10].hex()
        if fp not in by_fp:
            errors.append(f"{full}: fingerprint {fp} in the Rust header matches no schema by fastavro's fingerprint")
            continue
        if by_fp[fp][0] != full:
            errors.append(f"{full}: Rust header fingerprint {fp} is fastavro's fingerprint of {by_fp[fp][0]}")
            continue
        buf = io.BytesIO(body[10:])
        value = fastavro.schemaless_reader(buf, parsed, None)
        if buf.read():
            errors.append(f"{full}: bytes left after the datum")
        got = natural(raw, value, named)
        if got != golden:
            errors.append(f"{full}: fastavro decoded {json.dumps(got, ensure_ascii=False)} != golden")
        decoded += 1
        out = io.BytesIO()
        out.write(MAGIC + bytes.fromhex(fp))
        fastavro.schemaless_writer(out, parsed, datum(raw, golden, named))
        with open(os.path.join(out_dir, full + ".bin"), "wb") as fh:
            fh.write(out.getvalue())
        encoded += 1
    print(json.dumps({"fastavro": fastavro.__version__, "types": len(by_fp), "decoded": decoded,
                      "encoded": encoded, "errors": errors}, ensure_ascii=False))
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
