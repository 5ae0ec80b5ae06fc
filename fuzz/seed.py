#!/usr/bin/env python3
"""Writes fuzz/seeds/<target>/ from protocol/vectors/*.json (run after the vectors change).

Each seed is in the input format the target's check documents (crates/proto/tests/fuzz_checks).
The seeds are committed: they are small, change only with the vectors, and the ordinary test
`cargo test -p localcert-proto --test fuzz_regressions` runs every one through its check.
"""
import base64, json, os, shutil, struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VECTORS = os.path.join(ROOT, "protocol", "vectors")
SEEDS = os.path.join(ROOT, "fuzz", "seeds")
COMMANDS = {"PING": 0, "KEEPALIVE": 1, "MSG": 2, "CANCEL": 3, "ERROR": 4}


def load(name):
    with open(os.path.join(VECTORS, name + ".json")) as f:
        return json.load(f)


def steps(fragments, advance=0):
    """Reassembler input: each fragment after `advance` * 50 ms."""
    out = b""
    for frag in fragments:
        out += bytes([advance]) + struct.pack(">H", len(frag)) + frag
    return out


def fragments(cmd, data, fragment_len):
    """SPEC §3: an initial fragment, then continuations with wrapping sequence numbers."""
    out = [bytes([cmd]) + struct.pack(">H", len(data)) + data[:fragment_len - 3]]
    data, seq = data[fragment_len - 3:], 0
    while data:
        out.append(bytes([seq]) + data[:fragment_len - 1])
        data, seq = data[fragment_len - 1:], (seq + 1) % 0x80
    return out


def engine_steps(fragments):
    """device_engine input: the writes, then the central reads its notifications."""
    return b"".join(b"\x00" + struct.pack(">H", len(f)) + f for f in fragments) + b"\x40"


def acme_steps(*steps):
    """acme_handler input: (operation, flag, chunk) steps."""
    return b"".join(bytes([op, flag]) + struct.pack(">H", len(chunk)) + chunk for op, flag, chunk in steps)


def role_seeds(seeds, objects):
    """validation, acme_handler and cors (fuzz/roles): input formats in their checks."""
    att = bytes.fromhex(objects["attestation_object"]["hex"])
    v = seeds["validation"]
    v["attestation_vector"] = b"\x00" + att
    for case in load("malformed")["cases"]:
        if case["target"] == "attestation":
            v["attestation_" + case["name"]] = b"\x00" + bytes.fromhex(case["input"])
    v["attestation_valid"] = b"\x01"
    v["attestation_signature_bit"] = b"\x01" + bytes([0, 0xff, 0xf0, 0x01])
    v["csr_valid"] = b"\x03"
    v["csr_trailing_byte"] = b"\x03" + bytes([1, 0xff, 0xff, 0x00])
    v["csr_raw_extension"] = b"\x02" + bytes.fromhex(objects["origin_binding"]["der"])
    a = seeds["acme_handler"]
    account, order, attest, finalize = (2, 0, b""), (3, 0, b""), (4, 0, b""), (5, 0, b"")
    a["flow"] = acme_steps(account, order, attest, finalize, (1, 8, b""))
    a["flow_star"] = acme_steps(account, (3, 1, b""), attest, finalize, (1, 9, b""), (0, 0, b"/acme/star/x"))
    a["directory"] = acme_steps((0, 0, b"/acme/directory"), (0, 1, b"/acme/new-nonce"))
    a["raw_attestation_body"] = acme_steps(account, order, (0, 2, b"/acme/chall/x\n" + att))
    a["nonce_replayed"] = acme_steps(account, (7, 0, b""))
    a["challenge_expired"] = acme_steps(account, order, (6, 0, b"\x00\x01\x00\x00"), attest)
    a["wrong_eab"] = acme_steps((2, 2, b""), (2, 5, b""))
    a["edited_attestation"] = acme_steps(account, order, (4, 1, bytes([0, 0, 0x10, 0x80])))
    a["edited_csr"] = acme_steps(account, order, attest, (5, 1, bytes([1, 0, 0, 0x30])))
    a["key_change"] = acme_steps(account, (1, 3, b'{"account":"x","oldKey":{"kty":"EC"}}'))
    a["new_order_payload"] = acme_steps(account, (1, 1, b'{"identifiers":[{"type":"dns","value":"x.local"}]}'))
    c = seeds["cors"]
    origins = sorted({case["origin"] for case in load("names")["cases"]})
    for i, origin in enumerate(origins):
        c["get_%d" % i] = b"\x00\x01origin: " + origin.encode()
    c["preflight"] = b"\x01\x01origin: https://vod.example.com\naccess-control-request-method: PUT"
    c["preflight_other"] = b"\x01\x01origin: https://evil.example\naccess-control-request-method: PUT"
    c["two_origins_bound_first"] = b"\x00\x01origin: https://vod.example.com\norigin: https://evil.example"
    c["two_origins_bound_second"] = b"\x00\x01origin: https://evil.example\norigin: https://vod.example.com"
    c["careless_handler"] = (b"\x02\x01origin: https://vod.example.com\n--\n"
                             b"access-control-allow-origin: *\naccess-control-allow-methods: DELETE\nvary: accept")
    c["not_served"] = b"\x00\x00origin: https://vod.example.com"
    for case in load("malformed")["cases"]:
        if case["target"] == "origin":
            c["origin_" + case["name"]] = b"\x00\x01origin: " + case["input"].encode()


def main():
    seeds = {t: {} for t in ["frame_reassembler", "frame_round_trip", "message",
                             "attestation_object", "names", "origin_binding", "device_engine", "jws",
                             "validation", "acme_handler", "cors"]}
    for case in load("framing")["cases"]:
        frags = [bytes.fromhex(h) for h in case["fragments"]]
        data = bytes.fromhex(case["data"])
        name = "%s_%d_%d" % (case["command"].lower(), case["fragment_len"], len(data))
        seeds["frame_reassembler"][name] = steps(frags)
        if len(frags) > 1:
            # The same fragments in the vectors' order of arrival (SPEC §3.2 reordering).
            seeds["frame_reassembler"][name + "_arrival"] = steps([frags[i] for i in case["arrival"]])
        sel = COMMANDS[case["command"]]
        seeds["frame_round_trip"][name] = bytes([sel]) + struct.pack(">H", case["fragment_len"]) + data
        # Selector + 5 * 15: fragments arrive reversed in blocks of 16 (the window).
        seeds["frame_round_trip"][name + "_reversed16"] = (
            bytes([sel + 5 * 15]) + struct.pack(">H", case["fragment_len"]) + data)
    # Timeouts: a poll at exactly 5 s, and a late continuation.
    seeds["frame_reassembler"]["timeout_poll"] = steps([b"\x83\x00\x40\x01"]) + bytes([0x80 | 100])
    seeds["frame_reassembler"]["late_continuation"] = steps([b"\x83\x00\x04\x01"]) + steps([b"\x00\x02"], 100)
    seeds["frame_reassembler"]["cancel_mid_frame"] = steps([b"\x83\x00\x04\x01", b"\xbe\x00\x00"])
    for case in load("messages")["cases"]:
        sel = 0 if case["kind"] == "request" else case["operation"]
        seeds["message"][case["name"]] = bytes([sel]) + bytes.fromhex(case["hex"])
        if case["kind"] == "request":
            msg = bytes.fromhex(case["hex"])
            seeds["device_engine"][case["name"]] = engine_steps(fragments(0x83, msg, 180))
    seeds["device_engine"]["ping_then_timeout"] = engine_steps(fragments(0x81, b"ping", 180)) + b"\x94\x40"
    seeds["device_engine"]["cancel"] = engine_steps(fragments(0xbe, b"", 180))
    seeds["device_engine"]["interrupted_at_mtu_23"] = b"\xc0" + engine_steps(
        fragments(0x83, bytes(40), 18)[:1] + fragments(0x81, b"x", 18))
    for i, info in enumerate(load("objects")["info"]):
        seeds["message"]["info_%d" % i] = b"\x06" + bytes.fromhex(info["hex"])
    objects = load("objects")
    seeds["attestation_object"]["vector"] = bytes.fromhex(objects["attestation_object"]["hex"])
    seeds["origin_binding"]["vector"] = bytes.fromhex(objects["origin_binding"]["der"])
    for case in load("names")["cases"]:
        cert = bytes.fromhex(case["device_certificate"])
        text = "\n".join([case["origin"], case["label_text"], case["name"]]).encode()
        seeds["names"][case["name"]] = text
        seeds["names"][case["name"] + "_cert"] = "\n".join(
            [case["origin"], case["label_text"], ""]).encode() + cert
    targets = {"request": ("message", 0), "info": ("message", 6), "attestation": ("attestation_object", None),
               "extension": ("origin_binding", None), "frames": ("frame_reassembler", None)}
    for case in load("malformed")["cases"]:
        t, name = case["target"], case["name"]
        if t == "frames":
            seeds["frame_reassembler"][name] = steps([bytes.fromhex(h) for h in case["input"]])
        elif t.startswith("response:"):
            op = {"info": 1, "attest": 2, "install": 3, "list": 4, "remove": 5}[t.split(":")[1]]
            seeds["message"][name] = bytes([op]) + bytes.fromhex(case["input"])
        elif t in ("origin", "label", "name"):
            parts = ["https://vod.example.com", "tv", "tv.local"]
            parts[["origin", "label", "name"].index(t)] = case["input"]
            seeds["names"][name] = "\n".join(parts).encode()
        else:
            target, sel = targets[t]
            prefix = b"" if sel is None else bytes([sel])
            seeds[target][name] = prefix + bytes.fromhex(case["input"])
    # jws: no vector file covers ACME; hand-written bodies in each of the target's three modes.
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    header = b64(json.dumps({"alg": "ES256", "nonce": "n0nce", "url": "https://ca.test/acme/new-order",
                             "kid": "https://ca.test/acme/acct/1"}).encode())
    seeds["jws"]["post_as_get"] = b"\x00" + json.dumps(
        {"protected": header, "payload": "", "signature": b64(bytes(64))}).encode()
    eab = {"protected": b64(json.dumps({"alg": "HS256", "kid": "kid-1",
                                        "url": "https://ca.test/acme/new-account"}).encode()),
           "payload": b64(b'{"kty":"OKP","crv":"Ed25519","x":"AAAA"}'), "signature": b64(bytes(32))}
    seeds["jws"]["eab"] = b"\x01" + json.dumps(eab).encode()
    seeds["jws"]["signed_new_order"] = b"\x02" + b"n0nce\nhttps://ca.test/acme/new-order\n" + json.dumps(
        {"identifiers": [{"type": "dns", "value": "tv-vod-example-com-hp65xr-f1jk.local"}]}).encode()
    seeds["jws"]["signed_empty"] = b"\x02"
    role_seeds(seeds, objects)
    shutil.rmtree(SEEDS, ignore_errors=True)
    for target, files in seeds.items():
        os.makedirs(os.path.join(SEEDS, target))
        for name, data in files.items():
            with open(os.path.join(SEEDS, target, name), "wb") as f:
                f.write(data)
    print({t: len(f) for t, f in seeds.items()})


if __name__ == "__main__":
    main()
