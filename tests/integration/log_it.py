#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Integration tests of the log itself: one event is one journal line, and
nothing a peer sends can forge an event (issue: DCMTK texts with newlines
split events; a calling AE title `A" event=failed` matched the README's
grep).

usage: log_it.py BINARY CRAFT_SCU TEST
"""
import os
import re
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import it  # noqa: E402
from it import Daemon, check, echo  # noqa: E402

# The README's own filter for problems.
README_GREP = re.compile(r'event=(failed|deferred|forbidden|refused|conflict)')
LINE_START = re.compile(r'^<[0-7]>')


def item(kind, body):
    return struct.pack(">BBH", kind, 0, len(body)) + body


def associate_rq(calling=b"LOGTEST", called=b"STOWBRIDGE", contexts=None,
                 user_info=None):
    """An A-ASSOCIATE-RQ PDU (PS3.8 9.3.2) built by hand."""
    app = item(0x10, b"1.2.840.10008.3.1.1.1")
    if contexts is None:
        contexts = [item(0x20, bytes([1, 0, 0, 0])
                         + item(0x30, b"1.2.840.10008.1.1")
                         + item(0x40, b"1.2.840.10008.1.2"))]
    if user_info is None:
        user_info = item(0x50, item(0x51, struct.pack(">I", 16384)))
    body = (struct.pack(">HH", 1, 0) + called.ljust(16) + calling.ljust(16)
            + b"\0" * 32 + app + b"".join(contexts) + user_info)
    return struct.pack(">BBI", 1, 0, len(body)) + body


def send_raw(port, data, wait=0.5):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(data)
        s.settimeout(wait)
        try:
            s.recv(4096)
        except (socket.timeout, OSError):
            pass
    finally:
        s.close()


def malformed_requests():
    """Requests whose DCMTK error texts span several lines."""
    good_pc = item(0x20, bytes([1, 0, 0, 0])
                   + item(0x30, b"1.2.840.10008.1.1")
                   + item(0x40, b"1.2.840.10008.1.2"))
    cases = []
    # A presentation context whose sub-item overruns the item.
    bad = bytearray(good_pc)
    bad[10:12] = struct.pack(">H", 200)
    cases.append(("sub-item longer than its item",
                  associate_rq(contexts=[bytes(bad)])))
    # An even presentation context ID.
    even = bytearray(good_pc)
    even[4] = 2
    cases.append(("even context ID", associate_rq(contexts=[bytes(even)])))
    # A user information item with a wrong length.
    ui = bytearray(item(0x50, item(0x51, struct.pack(">I", 16384))))
    ui[2:4] = struct.pack(">H", 2)
    cases.append(("short user information", associate_rq(user_info=bytes(ui))))
    # An item of unknown type in the variable part.
    cases.append(("unknown item type",
                  associate_rq(contexts=[item(0x77, b"xx") + good_pc])))
    # A PDU length longer than what follows is held, then dropped.
    rq = associate_rq()
    cases.append(("truncated, closed", rq[:len(rq) - 20]))
    return cases


def after_association(port, pdu, wait=1.0):
    """Associates (Verification, context 1), then sends @pdu raw."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(associate_rq())
        s.settimeout(5)
        head = s.recv(6)
        check(len(head) == 6 and head[0] == 2, "A-ASSOCIATE-AC received")
        length = struct.unpack(">I", head[2:6])[0]
        while length > 0:
            length -= len(s.recv(length))
        s.sendall(pdu)
        s.settimeout(wait)
        try:
            while s.recv(4096):
                pass
        except (socket.timeout, OSError):
            pass
    finally:
        s.close()


def pdata(context_id, control, data, declared=None):
    pdv = struct.pack(">IBB", declared if declared is not None
                      else len(data) + 2, context_id, control) + data
    return struct.pack(">BBI", 4, 0, len(pdv)) + pdv


def broken_commands():
    """P-DATA PDUs after a good association that DCMTK refuses with texts
    of more than one line."""
    return [
        ("command on a context never proposed", pdata(3, 0x03, b"\0" * 20)),
        ("PDV longer than its PDU", pdata(1, 0x03, b"\0" * 20, 4000)),
        ("PDV of length 1", pdata(1, 0x03, b"", 1)),
        ("data set before any command", pdata(1, 0x02, b"\0" * 20)),
    ]


def test_log_lines(work):
    d = Daemon(work, dicom={"timeout_s": 3}).start()

    # A calling AE title that tries to forge an event: valid characters
    # (quote, space, '='), sent by DCMTK's own echoscu to a wrong called AE
    # and to the right one.
    forged = 'A" event=failed'
    r = echo(d.port, calling=forged, called="WRONGAE")
    check(r.returncode != 0, "wrong called AE refused")
    r = echo(d.port, calling=forged)
    check(r.returncode == 0, "the forged-looking AE title may still echo")
    # Raw requests, and one with control characters in the AE title.
    send_raw(d.port, associate_rq(calling=b'X"\nevent=failed'))
    for what, data in malformed_requests():
        send_raw(d.port, data)
    for what, data in broken_commands():
        after_association(d.port, data)
    check(echo(d.port).returncode == 0, "daemon serves after all of them")
    time.sleep(0.5)
    check(d.stop() == 0, "clean stop")

    lines = d.log_text().splitlines()
    check(lines, "the daemon logged")
    strays = [l for l in lines if not LINE_START.match(l)]
    check(not strays, "every line starts with a priority prefix (one event, "
          "one line): %r" % strays[:3])
    forged_hits = [l for l in lines if README_GREP.search(l)]
    check(not forged_hits, "the README's grep finds no forged event: %r"
          % forged_hits[:3])
    mentions = [l for l in lines if "event\\x3dfailed" in l]
    check(mentions, "the forged AE title is still visible, escaped")
    check(any('A\\"\\x20event\\x3dfailed@127.0.0.1' in l for l in lines),
          "the AE title is written escaped in from=")
    check(not any(README_GREP.search(l) and "event=rejected" in l
                  and "from=A" in l for l in lines),
          "no rejected line carries a second event=")


def main():
    it.BINARY, it.CRAFT_SCU, name = sys.argv[1], sys.argv[2], sys.argv[3]
    test = globals().get("test_" + name)
    if test is None:
        print("no such test:", name)
        return 2
    return it.run_test(test, name)


if __name__ == "__main__":
    sys.exit(main())
