#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Scripted Azure identity endpoints for the credential unit tests.

Usage: identity_server.py TOKEN_DIR

Listens on 127.0.0.1 and a free port and prints "PORT <n>" on stdout once
it does (nothing else goes to stdout). The first path element picks the
endpoint, the second the scenario:

  GET /imds/<scenario>/...   the Azure VM instance metadata service
                             (api-version 2018-02-01, "Metadata: true")
  GET /arc/<scenario>/...    the Azure Arc agent: 401 with
                             "WWW-Authenticate: Basic realm=<file>", then a
                             token for "Authorization: Basic <contents of
                             that file>"; TOKEN_DIR is where the test put
                             the key files
  POST /token                a token endpoint taking a client assertion
                             (RFC 7523); remembers what it got
  GET /_last                 the last form /token got, as JSON
  GET /_count                how many tokens the "short" scenarios issued

Scenario "short" (both endpoints) issues unsigned JWTs that live 10 s.

Every request is checked the way the real endpoint would check it; a
request that is wrong gets the real endpoint's error, so a test sees it.
"""
import base64
import json
import os
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN_DIR = sys.argv[1] if len(sys.argv) > 1 else "/nonexistent"
STATE = {"last_form": None, "tokens": 0}
LOCK = threading.Lock()

# The file each Arc scenario's challenge names.
ARC_REALMS = {
    "ok": os.path.join(TOKEN_DIR, "ok.key"),
    "oversize": os.path.join(TOKEN_DIR, "big.key"),
    "wrongdir": "/tmp/elsewhere/stolen.key",
    "escape": os.path.join(TOKEN_DIR, "..", "escape.key"),
    "notkey": os.path.join(TOKEN_DIR, "secret.txt"),
    "perm": os.path.join(TOKEN_DIR, "locked.key"),
    "symlink": os.path.join(TOKEN_DIR, "link.key"),
    "dir": os.path.join(TOKEN_DIR, "adir.key"),
    "rotated": os.path.join(TOKEN_DIR, "ok.key"),
    "quoted": os.path.join(TOKEN_DIR, "ok.key"),
    "short": os.path.join(TOKEN_DIR, "ok.key"),
}


def fake_jwt(claims):
    """An unsigned JWT carrying @claims (the bridge only decodes it)."""
    def b64(obj):
        raw = json.dumps(obj).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return b64({"alg": "none", "typ": "JWT"}) + "." + b64(claims) + ".sig"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("identity_server: " + (fmt % args) + "\n")

    def answer(self, status, body, headers=None):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def error(self, status, error, description):
        self.answer(status, {"error": error,
                             "error_description": description})

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        if url.path == "/_last":
            with LOCK:
                return self.answer(200, STATE["last_form"] or {})
        if url.path == "/_count":
            with LOCK:
                return self.answer(200, {"tokens": STATE["tokens"]})
        if len(parts) < 2 or parts[0] not in ("imds", "arc"):
            return self.error(404, "not_found", "no such path")
        if self.headers.get("Metadata") != "true":
            return self.error(400, "invalid_request",
                              "Required metadata header not specified")
        if "resource" not in query or not query["resource"][0]:
            return self.error(400, "invalid_request",
                              "Required query variable 'resource' is missing")
        if parts[0] == "imds":
            return self.imds(parts[1], query)
        return self.arc(parts[1], query)

    def imds(self, scenario, query):
        if query.get("api-version") != ["2018-02-01"]:
            return self.error(400, "invalid_request", "bad api-version")
        if "Authorization" in self.headers:
            return self.error(400, "invalid_request", "unexpected Authorization")
        who = query.get("client_id", ["system"])[0]
        now = int(time.time())
        if scenario == "ok":
            # The documented shape: every value a string.
            return self.answer(200, {
                "access_token": "imds.%s.%s" % (who, urllib.parse.quote(
                    query["resource"][0], safe="")),
                "refresh_token": "", "expires_in": "86399",
                "expires_on": str(now + 86399), "not_before": str(now),
                "resource": query["resource"][0], "token_type": "Bearer"})
        if scenario == "short":
            # A JWT that lives 10 s, naming a managed identity (for the
            # daemon's refreshes and the 403 diagnosis).
            with LOCK:
                STATE["tokens"] += 1
                n = STATE["tokens"]
            return self.answer(200, {
                "access_token": fake_jwt({
                    "aud": query["resource"][0], "oid": "mi-object-id",
                    "appid": "mi-client-id", "idtyp": "app", "n": n,
                    "exp": now + 10, "iat": now}),
                "expires_in": "10", "expires_on": str(now + 10),
                "resource": query["resource"][0], "token_type": "Bearer"})
        if scenario == "numbers":
            return self.answer(200, {"access_token": "imds.numbers",
                                     "expires_in": 3600, "token_type": "Bearer"})
        if scenario == "expires-on":
            return self.answer(200, {"access_token": "imds.on",
                                     "expires_on": now + 1800})
        if scenario == "expired":
            return self.answer(200, {"access_token": "imds.old",
                                     "expires_on": str(now - 10)})
        if scenario == "noidentity":
            return self.error(400, "invalid_request", "Identity not found")
        if scenario == "secretdesc":
            return self.error(400, "invalid_request",
                              "bad token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln here")
        if scenario == "updating":
            return self.answer(410, b"")
        if scenario == "busy":
            return self.error(429, "too_many_requests", "slow down")
        if scenario == "down":
            return self.answer(503, b"<html>unavailable</html>")
        if scenario == "garbage":
            return self.answer(200, b"this is not JSON")
        if scenario == "notoken":
            return self.answer(200, {"expires_in": "3600"})
        if scenario == "redirect":
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:1/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if scenario == "big":
            return self.answer(200, b"{\"access_token\": \"" + b"a" * 100000 +
                               b"\"}")
        return self.error(404, "not_found", "unknown scenario " + scenario)

    def arc(self, scenario, query):
        if query.get("api-version") != ["2020-06-01"]:
            return self.error(400, "invalid_request", "bad api-version")
        if "client_id" in query:
            return self.error(400, "invalid_request", "user-assigned identity")
        realm = ARC_REALMS.get(scenario)
        auth = self.headers.get("Authorization")
        if scenario == "noheader":
            return self.answer(401, {"error": "unauthorized"})
        if realm is None:
            return self.error(404, "not_found", "unknown scenario " + scenario)
        if auth is None:
            value = 'Basic realm="%s"' % realm if scenario == "quoted" \
                else "Basic realm=%s" % realm
            return self.answer(401, {"error": "unauthorized"},
                               {"WWW-Authenticate": value})
        try:
            with open(realm, "r", encoding="ascii") as f:
                expected = "Basic " + f.read().strip()
        except OSError as e:
            return self.error(500, "server_error", "cannot read key: %s" % e)
        if scenario == "rotated" or auth != expected:
            return self.answer(401, {"error": "unauthorized"},
                               {"WWW-Authenticate": "Basic realm=%s" % realm})
        now = int(time.time())
        if scenario == "short":
            return self.answer(200, {
                "access_token": fake_jwt({"aud": query["resource"][0],
                                          "oid": "arc-object-id",
                                          "idtyp": "app", "exp": now + 10}),
                "expires_in": "10", "expires_on": str(now + 10),
                "resource": query["resource"][0], "token_type": "Bearer"})
        return self.answer(200, {
            "access_token": "arc.%s" % scenario, "expires_in": "3600",
            "expires_on": str(now + 3600), "resource": query["resource"][0],
            "token_type": "Bearer"})

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length).decode("ascii", "replace")
        if self.path != "/token":
            return self.error(404, "not_found", "no such path")
        if self.headers.get("Content-Type") != \
                "application/x-www-form-urlencoded":
            return self.error(400, "invalid_request", "bad content type")
        form = dict(urllib.parse.parse_qsl(body, keep_blank_values=True,
                                           strict_parsing=True))
        with LOCK:
            STATE["last_form"] = form
            STATE["tokens"] += 1
            n = STATE["tokens"]
        if form.get("grant_type") != "client_credentials" or \
                form.get("client_assertion_type") != \
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" or \
                not form.get("client_id") or not form.get("client_assertion"):
            return self.error(400, "invalid_request", "not a client assertion")
        if form["client_id"] == "unknown-app":
            # What Entra answers when no federated credential matches.
            return self.answer(400, {
                "error": "invalid_client",
                "error_description": "AADSTS70021: No matching federated "
                                     "identity record found for presented "
                                     "assertion.\r\nTrace ID: 1",
                "error_codes": [70021]})
        return self.answer(200, {"access_token": "fed.%d" % n,
                                 "token_type": "Bearer", "expires_in": 3599})


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that hangs up early (the answer-size cap) is expected.
        sys.stderr.write("identity_server: %s: %s\n"
                         % (client_address, sys.exc_info()[1]))


def main():
    server = Server(("127.0.0.1", 0), Handler)
    sys.stdout.write("PORT %d\n" % server.server_address[1])
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
