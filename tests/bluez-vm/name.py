#!/usr/bin/env python3
"""Prints the .local name a device will get: name.py LABEL ORIGIN ATTESTATION_PEM VECTORS_JSON.

The UA needs `--resolve NAME=127.0.0.1` before it starts (the VM has no network card for mDNS to
answer on), so the name is computed up front the way crates/proto/src/name.rs derives it:
`{label}-{origin slug}-{origin hash}-{device tag}.local`. Before printing, the derivation is
checked against protocol/vectors/names.json, so a change in the proto crate fails here, loudly,
instead of as an unresolved name deep in the VM run.
"""
import base64
import hashlib
import json
import re
import sys
from urllib.parse import urlsplit

BASE32 = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford, lower case


def base32_prefix(digest: bytes, length: int) -> str:
    bits = int.from_bytes(digest, "big")
    total = len(digest) * 8
    return "".join(BASE32[(bits >> (total - 5 * (i + 1))) & 0x1F] for i in range(length))


def slugify(text: str, limit: int) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:limit].rstrip("-")


def origin_tag(origin: str) -> str:
    parts = urlsplit(origin)
    source = parts.hostname + (f"-{parts.port}" if parts.port else "")
    digest = hashlib.sha256(b"localcert origin tag v1\0" + origin.encode()).digest()
    return f"{slugify(source, 30)}-{base32_prefix(digest, 6)}"


def device_tag(certificate_der: bytes) -> str:
    return base32_prefix(hashlib.sha256(b"localcert device tag v1\0" + certificate_der).digest(), 4)


def first_certificate_der(pem: str) -> bytes:
    match = re.search(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", pem, re.S)
    if not match:
        sys.exit("no certificate in the attestation chain")
    return base64.b64decode("".join(match.group(1).split()))


def main() -> None:
    label, origin, chain_path, vectors_path = sys.argv[1:5]
    with open(vectors_path, encoding="utf-8") as f:
        for case in json.load(f)["cases"]:
            got = (origin_tag(case["origin"]), device_tag(bytes.fromhex(case["device_certificate"])))
            want = (case["origin_tag"], case["device_tag"])
            if got != want:
                sys.exit(f"name derivation differs from protocol/vectors/names.json: {got} != {want}")
    with open(chain_path, encoding="utf-8") as f:
        tag = device_tag(first_certificate_der(f.read()))
    print(f"{label}-{origin_tag(origin)}-{tag}.local")


if __name__ == "__main__":
    main()
