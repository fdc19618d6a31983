#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Splits a WADO-RS multipart/related body into one file per part, as a
client without a streaming parser does after `curl -o`: the baseline of
bench_retrieve.sh.

usage: wado_split.py HEADERS BODY OUT_DIR
HEADERS is curl's -D dump (the boundary comes from its Content-Type).
Prints the number of parts written.
"""
import mmap
import os
import re
import sys


def main():
    headers, body, out = sys.argv[1], sys.argv[2], sys.argv[3]
    text = open(headers, "rb").read().decode("latin-1")
    m = re.search(r'(?im)^content-type:.*?boundary="?([^";\r\n]+)"?', text)
    if m is None:
        sys.exit("no boundary in " + headers)
    delim = b"--" + m.group(1).encode()
    os.makedirs(out, exist_ok=True)
    count = 0
    with open(body, "rb") as f, mmap.mmap(f.fileno(), 0,
                                         access=mmap.ACCESS_READ) as data:
        pos = data.find(delim)
        while pos >= 0:
            pos += len(delim)
            if data[pos:pos + 2] == b"--":
                break
            start = data.find(b"\r\n\r\n", pos) + 4
            end = data.find(b"\r\n" + delim, start)
            if start < 4 or end < 0:
                sys.exit("truncated multipart body")
            with open(os.path.join(out, "%05d.dcm" % count), "wb") as o:
                o.write(data[start:end])
            count += 1
            pos = end + 2
    print(count)


if __name__ == "__main__":
    main()
