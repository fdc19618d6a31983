#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""A local OAuth2 token endpoint for the demo (never for production):
answers client_credentials requests from the one client it knows with a
short-lived unsigned JWT, so stowbridge's real token path runs end to end.

usage: demo-token-server.py PORT CLIENT_ID CLIENT_SECRET
"""
import base64
import http.server
import json
import sys
import time
import urllib.parse


def jwt(claims):
    def b64(obj):
        raw = json.dumps(obj).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return b64({"alg": "none", "typ": "JWT"}) + "." + b64(claims) + ".demo"


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        sys.stderr.write("token-server: " + fmt % args + "\n")

    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        form = urllib.parse.parse_qs(self.rfile.read(n).decode())
        ok = (form.get("grant_type") == ["client_credentials"] and
              form.get("client_id") == [sys.argv[2]] and
              form.get("client_secret") == [sys.argv[3]])
        if ok:
            now = int(time.time())
            body = {"access_token": jwt({"aud": "http://127.0.0.1/dicom-web",
                                         "appid": sys.argv[2], "idtyp": "app",
                                         "iat": now, "exp": now + 300}),
                    "token_type": "Bearer", "expires_in": 300}
            status = 200
        else:
            body = {"error": "invalid_client",
                    "error_description": "unknown client or wrong secret"}
            status = 401
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
