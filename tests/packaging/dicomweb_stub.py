#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""A DICOMweb root and an OAuth2 token endpoint for the packaging test:
just enough for `stowbridge check` to go all the way (token, then
QIDO-RS /studies?limit=1 with that token) and for the daemon to deliver
(STOW-RS: every instance is stored), and a log of what it was asked.

usage: dicomweb_stub.py PORT_FILE LOG_FILE CLIENT_ID CLIENT_SECRET [CERT KEY]

Listens on 127.0.0.1, on a port the kernel picks, written to PORT_FILE once
it is listening; with CERT and KEY (PEM files), over TLS. Each request is appended to LOG_FILE as one JSON line:
{"method", "path", "authorization", then "grant_type", "client_id",
"secret_ok" for a token, or "known_token", "stored" (the SOP Instance UIDs)
for STOW-RS}. Stops by itself after 15 minutes.
"""
import base64
import http.server
import io
import json
import os
import re
import secrets
import ssl
import sys
import threading
import time
import urllib.parse

import pydicom

PORT_FILE, LOG_FILE, CLIENT_ID, CLIENT_SECRET = sys.argv[1:5]
ISSUED = set()
LOCK = threading.Lock()


def jwt(claims):
    def b64(obj):
        raw = json.dumps(obj).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return (b64({"alg": "none", "typ": "JWT"}) + "." + b64(claims) + "." +
            secrets.token_urlsafe(8))


def record(entry):
    with LOCK, open(LOG_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("dicomweb-stub: " + fmt % args + "\n")

    def reply(self, status, body, ctype):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def known_token(self):
        auth = self.headers.get("Authorization") or ""
        with LOCK:
            return auth.startswith("Bearer ") and auth[7:] in ISSUED

    def do_stow(self, body):
        """STOW-RS: every part of the multipart/related body is stored
        (listed in ReferencedSOPSequence by its SOP Instance UID)."""
        ctype = self.headers.get("Content-Type", "")
        m = re.search(r'boundary="?([^";]+)"?', ctype)
        stored = []
        if m:
            for part in body.split(b"--" + m.group(1).encode())[1:]:
                if part.startswith(b"--"):
                    break
                head, _, data = part.partition(b"\r\n\r\n")
                if data.endswith(b"\r\n"):
                    data = data[:-2]
                ds = pydicom.dcmread(io.BytesIO(data), force=True)
                stored.append((str(ds.SOPClassUID), str(ds.SOPInstanceUID)))
        record({"method": "POST", "path": self.path,
                "authorization": self.headers.get("Authorization"),
                "known_token": self.known_token(),
                "stored": [uid for _, uid in stored]})
        if not self.known_token():
            self.reply(401, {"error": "unknown token"}, "application/json")
            return
        items = [{"00081150": {"vr": "UI", "Value": [cls]},
                  "00081155": {"vr": "UI", "Value": [uid]}}
                 for cls, uid in stored]
        self.reply(200, {"00081199": {"vr": "SQ", "Value": items}},
                   "application/dicom+json")

    def do_POST(self):
        body = self.read_body()
        if self.path.startswith("/dicomweb/studies"):
            self.do_stow(body)
            return
        form = urllib.parse.parse_qs(body.decode())
        secret_ok = form.get("client_secret") == [CLIENT_SECRET]
        record({"method": "POST", "path": self.path,
                "authorization": self.headers.get("Authorization"),
                "grant_type": form.get("grant_type", [None])[0],
                "client_id": form.get("client_id", [None])[0],
                "secret_ok": secret_ok})
        if self.path != "/token":
            self.reply(404, {"error": "not found"}, "application/json")
            return
        if (form.get("grant_type") != ["client_credentials"] or
                form.get("client_id") != [CLIENT_ID] or not secret_ok):
            self.reply(401, {"error": "invalid_client",
                             "error_description": "unknown client or wrong "
                                                  "secret"},
                       "application/json")
            return
        now = int(time.time())
        token = jwt({"aud": "stowbridge-packaging-test", "appid": CLIENT_ID,
                     "roles": ["dicom.write"], "iat": now, "exp": now + 600})
        with LOCK:
            ISSUED.add(token)
        self.reply(200, {"access_token": token, "token_type": "Bearer",
                         "expires_in": 600}, "application/json")

    def do_GET(self):
        auth = self.headers.get("Authorization") or ""
        record({"method": "GET", "path": self.path, "authorization": auth})
        if not self.path.startswith("/dicomweb/studies"):
            self.reply(404, {"error": "not found"}, "application/json")
            return
        with LOCK:
            known = auth.startswith("Bearer ") and auth[7:] in ISSUED
        if not known:
            self.reply(401, {"error": "unknown token"}, "application/json")
            return
        self.reply(200, [], "application/dicom+json")


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
if len(sys.argv) > 6:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[5], sys.argv[6])
    server.socket = context.wrap_socket(server.socket, server_side=True)
threading.Timer(900, server.shutdown).start()
with open(PORT_FILE + ".tmp", "w", encoding="utf-8") as f:
    f.write(str(server.server_address[1]))
os.rename(PORT_FILE + ".tmp", PORT_FILE)
server.serve_forever()
