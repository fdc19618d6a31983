#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Short associations without a process per association, for
bench_tls.sh: N associations in a row to PORT (plain) and TLS_PORT (TLS,
presenting the modality certificate), each a full TCP connect, TLS
handshake (no resumption: stowbridge keeps no session cache and sends no
tickets), A-ASSOCIATE-RQ (Verification) -> A-ASSOCIATE-AC, A-RELEASE-RQ
-> A-RELEASE-RP, close. Prints one line per kind:
"KIND N TOTAL_S MEDIAN_MS P95_MS PROTOCOL".

usage: tls_handshakes.py N PORT TLS_PORT CA CERT KEY
"""
import os
import socket
import ssl
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "tests", "integration"))
from tls_it import associate_rq  # noqa: E402

RELEASE_RQ = b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00"


def read_pdu(s):
    head = b""
    while len(head) < 6:
        chunk = s.recv(6 - len(head))
        if not chunk:
            raise OSError("closed before a PDU")
        head += chunk
    left = int.from_bytes(head[2:6], "big")
    while left > 0:
        chunk = s.recv(min(left, 65536))
        if not chunk:
            raise OSError("closed inside a PDU")
        left -= len(chunk)
    return head[0]


def one(port, ctx):
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s = ctx.wrap_socket(raw) if ctx else raw
    protocol = s.version() if ctx else "plain"
    try:
        s.sendall(associate_rq(b"BENCH"))
        if read_pdu(s) != 0x02:
            raise OSError("no A-ASSOCIATE-AC")
        s.sendall(RELEASE_RQ)
        if read_pdu(s) != 0x06:
            raise OSError("no A-RELEASE-RP")
    finally:
        s.close()
    return protocol


def run(kind, n, port, ctx):
    times = []
    protocol = "?"
    t0 = time.monotonic()
    for _ in range(n):
        a = time.monotonic()
        protocol = one(port, ctx)
        times.append((time.monotonic() - a) * 1000)
    total = time.monotonic() - t0
    times.sort()
    print("%s %d %.3f %.2f %.2f %s" % (kind, n, total,
                                        statistics.median(times),
                                        times[int(len(times) * 0.95) - 1],
                                        protocol))


def main():
    n, port, tls_port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    ca, cert, key = sys.argv[4:7]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(ca)
    ctx.load_cert_chain(cert, key)
    run("plain", n, port, None)
    run("tls", n, port=tls_port, ctx=ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
