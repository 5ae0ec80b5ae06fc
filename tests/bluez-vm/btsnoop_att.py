#!/usr/bin/env python3
"""ATT decode of a `btmon -w` capture (btsnoop, monitor format), plain ATT and EATT channels.

Usage: btsnoop_att.py [--device hciN] CAPTURE            one line per ATT PDU of interest
       btsnoop_att.py [--device hciN] --summary CAPTURE  one line: MTU exchanges, the device's
                                                         writes and notifications, channels
The device's controller is hci0 unless --device says otherwise.

btmon 5.66 `-r` crashed on such captures, hence this small decoder.
"""
import struct
import sys

OPCODES = {
    0x01: "Error Response", 0x02: "Exchange MTU Request", 0x03: "Exchange MTU Response",
    0x0A: "Read Request", 0x0B: "Read Response", 0x12: "Write Request", 0x13: "Write Response",
    0x1B: "Handle Value Notification", 0x1D: "Handle Value Indication",
    0x23: "Multiple Handle Value Notification", 0x52: "Write Command",
}
ACL_TX, ACL_RX = 4, 5  # btsnoop monitor opcodes


def att_pdus(path):
    """Yields (controller index, direction, channel, opcode, payload), ACL fragments joined."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"btsnoop\0":
        raise SystemExit(f"{path}: not a btsnoop file")
    partial = {}  # (index, op, connection handle) -> L2CAP frame so far
    sdus = {}  # (index, op, connection handle, channel) -> (EATT SDU length, SDU so far)
    offset = 16
    while offset + 24 <= len(data):
        _orig, incl, flags, _drops, _ts = struct.unpack(">IIIIq", data[offset:offset + 24])
        offset += 24
        record = data[offset:offset + incl]
        offset += incl
        index, op = flags >> 16, flags & 0xFFFF
        if op not in (ACL_TX, ACL_RX) or len(record) < 4:
            continue
        handle_flags = struct.unpack("<H", record[:2])[0]
        key = (index, op, handle_flags & 0x0FFF)
        if (handle_flags >> 12) & 0x3 == 0x1:  # continuation of an ACL packet
            if key not in partial:
                continue
            partial[key] += record[4:]
        else:
            partial[key] = record[4:]
        frame = partial[key]
        if len(frame) < 4 or len(frame) < 4 + struct.unpack("<H", frame[:2])[0]:
            continue  # more fragments to come
        del partial[key]
        l2_len, cid = struct.unpack("<HH", frame[:4])
        pdu = frame[4:4 + l2_len]
        direction = "TX" if op == ACL_TX else "RX"
        if cid == 0x0004 and pdu:
            yield index, direction, "ATT", pdu[0], pdu[1:]
        elif cid >= 0x0040:  # EATT: credit-based K-frames; the first of an SDU has its length
            sdu_key = key + (cid,)
            if sdu_key in sdus:
                sdu_len, sdu = sdus.pop(sdu_key)
                sdu += pdu
            elif len(pdu) >= 2:
                sdu_len, sdu = struct.unpack("<H", pdu[:2])[0], pdu[2:]
            else:
                continue
            if len(sdu) < sdu_len:
                sdus[sdu_key] = (sdu_len, sdu)
            elif sdu:
                yield index, direction, f"EATT 0x{cid:04x}", sdu[0], sdu[1:sdu_len]


def main():
    args = sys.argv[1:]
    # The device's controller: hci0 here, hci1 in tests/webbluetooth-vm (Chromium takes hci0).
    device = 0
    if args[:1] == ["--device"] and len(args) > 1:
        device, args = int(args[1].removeprefix("hci")), args[2:]
    summary = args[:1] == ["--summary"]
    path = args[-1]
    mtus, writes, notifications, largest_write, largest_notification = [], 0, 0, 0, 0
    channels = set()
    for index, direction, channel, opcode, payload in att_pdus(path):
        if opcode not in OPCODES:
            continue
        if not summary:
            print(f"hci{index} {direction} {channel} {OPCODES[opcode]} payload={payload.hex()}")
        if opcode in (0x02, 0x03) and len(payload) >= 2:
            mtus.append(f"hci{index} {direction} {OPCODES[opcode].split()[-1].lower()} "
                        f"{struct.unpack('<H', payload[:2])[0]}")
        # Count each PDU once, as the device's controller receives or sends it.
        if index == device and direction == "RX" and opcode in (0x12, 0x52):
            writes += 1
            largest_write = max(largest_write, len(payload) - 2)
            channels.add(channel.split()[0])
        if index == device and direction == "TX" and opcode == 0x1B:
            notifications += 1
            largest_notification = max(largest_notification, len(payload) - 2)
            channels.add(channel.split()[0])
        if index == device and direction == "TX" and opcode == 0x23:  # handle, length, value tuples
            at = 0
            while at + 4 <= len(payload):
                length = struct.unpack("<H", payload[at + 2:at + 4])[0]
                notifications += 1
                largest_notification = max(largest_notification, length)
                at += 4 + length
            channels.add(channel.split()[0])
    if summary:
        print(f"ATT MTU exchanges [{', '.join(mtus) or 'none'}]; device received {writes} writes "
              f"(largest value {largest_write} B), sent {notifications} notifications "
              f"(largest value {largest_notification} B); channels {sorted(channels)}")


if __name__ == "__main__":
    main()
