#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Loopback tests of the admin endpoint (admin/) with real HTTP clients:
curl, raw sockets for slow and flooding clients, headless Chromium and a
real Prometheus server. The server under test is tests/unit/admin_demo.c
(the admin library over a fixed, realistic snapshot).

usage: admin_it.py ADMIN_DEMO OUT_DIR TEST

Each TEST is one function below (test_<name>); CTest runs each as its own
test with a timeout. OUT_DIR keeps what is worth a look afterwards (the
screenshots). Exit 0 pass, 1 fail, 77 skipped (a tool is not installed).
"""
import http.client
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import it  # noqa: E402  (check, Failure, run, run_test, wait_for, free_port)

check = it.check
Failure = it.Failure
SKIP = 77
DEMO = None
OUT_DIR = None
CHROMIUM = "/usr/bin/chromium"
PROMETHEUS = "/usr/bin/prometheus"
FAILED_ID = "1764000000.123456-9f1c2b3a4d5e6f70"
FAILED_REASON = ("rejected by the server: 0xA900 "
                 "<Data Set does not match SOP Class>")
TOKEN = "adm1n-t0ken-for-tests-Zq9"
ALERTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                      "admin", "alerts.yml")


class Skip(Exception):
    pass


class Demo:
    """One admin_demo process; stopped (by its pid) on exit."""
    count = 0

    def __init__(self, work, *args):
        Demo.count += 1
        self.log_path = os.path.join(work, "demo-%d.log" % Demo.count)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([DEMO, *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE,
                                     stderr=self.log)
        line = self.proc.stdout.readline().decode()
        if not line.startswith("port="):
            self.stop()
            raise Failure("admin_demo did not start: %r, see %s"
                          % (line, self.log_path))
        self.port = int(line.strip()[5:])
        self.base = "http://127.0.0.1:%d" % self.port

    def stop(self):
        """Stops it with SIGTERM; returns its exit status (0 when it shut
        down cleanly: with the sanitizers, no leak and no error)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        rc = self.stop()
        if exc_type is None:
            check(rc == 0, "admin_demo shut down cleanly (exit %d, see %s)"
                  % (rc, self.log_path))


def eventually(predicate, seconds, what):
    """Waits up to SECONDS for PREDICATE; fails the test if it never
    holds."""
    it.wait_for(predicate, seconds, what)
    print("ok:", what)


def curl(work, url, *args, timeout=30):
    """One request with curl. Returns (status, headers, body, exit code);
    status 0 when no HTTP answer came."""
    hdr = os.path.join(work, "curl.hdr")
    body = os.path.join(work, "curl.body")
    for p in (hdr, body):
        if os.path.exists(p):
            os.unlink(p)
    r = it.run(["curl", "-sS", "-o", body, "-D", hdr, "-w", "%{http_code}",
                "--max-time", str(timeout), *args, url], timeout=timeout + 10)
    headers = {}
    if os.path.exists(hdr):
        with open(hdr, "rb") as f:
            for line in f.read().decode("latin-1").split("\r\n"):
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
    data = b""
    if os.path.exists(body):
        with open(body, "rb") as f:
            data = f.read()
    code = int(r.stdout[-3:]) if r.stdout[-3:].isdigit() else 0
    return code, headers, data, r.returncode


def get_json(work, url, *args):
    code, headers, body, _ = curl(work, url, *args)
    check(headers.get("content-type") == "application/json",
          "%s answers application/json" % url)
    return code, json.loads(body)


# ---- contents and formats ---------------------------------------------------

def test_endpoints(work):
    with Demo(work) as d:
        code, j = get_json(work, d.base + "/healthz")
        check(code == 200 and j["status"] == "ok", "/healthz 200 ok")
        code, j = get_json(work, d.base + "/readyz")
        check(code == 200 and j["ready"] is True and
              set(j["checks"].values()) == {"ok"}, "/readyz 200, all ok")

        code, h, body, _ = curl(work, d.base + "/metrics")
        text = body.decode()
        check(code == 200, "/metrics 200")
        check(h.get("content-type") ==
              "text/plain; version=0.0.4; charset=utf-8",
              "/metrics Content-Type is the text format 0.0.4")
        check("# TYPE stowbridge_received_instances_total counter\n" in text,
              "/metrics has HELP/TYPE lines")
        check('stowbridge_received_instances_total{calling_ae="CT01"} 1234\n'
              in text, "/metrics has the CT01 counter")
        check(text.endswith("\n"), "/metrics ends with a newline")
        if shutil.which("promtool"):
            r = subprocess.run(["promtool", "check", "metrics"],
                               input=body, capture_output=True, timeout=60)
            check(r.returncode == 0, "promtool check metrics accepts the "
                  "served text " + r.stdout.decode() + r.stderr.decode())
        conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)
        conn.request("HEAD", "/metrics")
        resp = conn.getresponse()
        check(resp.status == 200 and resp.read() == b"" and
              int(resp.getheader("Content-Length")) > 1000,
              "HEAD /metrics: 200, the length, no body")
        conn.close()

        code, h, body, _ = curl(work, d.base + "/")
        page = body.decode()
        check(code == 200 and h.get("content-type") ==
              "text/html; charset=utf-8", "/ is HTML")
        check("default-src 'none'" in h.get("content-security-policy", ""),
              "the page has a strict Content-Security-Policy")
        check(h.get("x-frame-options") == "DENY" and
              h.get("cache-control") == "no-store", "no framing, no cache")
        check('<td class="n">61234</td>' in page, "the page shows the backlog")
        check("0xA900 &lt;Data Set does not match SOP Class&gt;" in page,
              "the page shows the failed entry's reason, escaped")
        check("<script" not in page and "<link" not in page and
              'src="' not in page, "the page loads nothing and runs nothing")

        for path in ("/nope", "/metrics/", "/index.html", "//metrics"):
            code, _, _, _ = curl(work, d.base + path)
            check(code == 404, "%s is 404" % path)
        code, _, _, _ = curl(work, d.base + "/", "-H", "Host: evil.example")
        check(code == 421, "a foreign Host is refused (DNS rebinding)")
        code, _, _, _ = curl(work, d.base + "/",
                             "-H", "Host: localhost:%d" % d.port)
        check(code == 200, "Host: localhost is fine")
        # Keep-alive: the second request reuses the connection.
        r = it.run(["curl", "-sv", "-o", "/dev/null", "-o", "/dev/null",
                    d.base + "/healthz", d.base + "/metrics"])
        check("Re-using existing connection" in r.stderr,
              "keep-alive between requests")
        r = it.run(["curl", "-si", d.base + "/", d.base + "/metrics"])
        check("set-cookie" not in r.stdout.lower(), "no cookie, ever")
        # Its own thread, named, at a lower priority, signals blocked.
        found = None
        task_dir = "/proc/%d/task" % d.proc.pid
        for tid in os.listdir(task_dir):
            with open(os.path.join(task_dir, tid, "comm")) as f:
                if f.read().strip() == "sb-admin":
                    with open(os.path.join(task_dir, tid, "stat")) as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                    with open(os.path.join(task_dir, tid, "status")) as f:
                        blocked = [l.split()[1] for l in f
                                   if l.startswith("SigBlk:")][0]
                    found = (int(fields[16]), blocked)
        # Ten above the daemon's own nice value (the suite may run niced).
        base_nice = os.getpriority(os.PRIO_PROCESS, d.proc.pid)
        check(found is not None and found[0] == min(19, base_nice + 10),
              "the server runs on its own thread sb-admin at nice +10")
        check(int(found[1], 16) & (1 << (signal.SIGTERM - 1)),
              "... with the signals blocked")


def test_methods(work):
    with Demo(work) as d:
        for method in ("PUT", "DELETE", "PATCH", "OPTIONS", "POST"):
            for path in ("/", "/metrics", "/healthz"):
                code, h, _, _ = curl(work, d.base + path, "-X", method)
                check(code == 405 and h.get("allow") == "GET, HEAD",
                      "%s %s: 405, Allow: GET, HEAD" % (method, path))
        for method in ("GET", "PUT", "HEAD"):
            extra = ["-I"] if method == "HEAD" else ["-X", method]
            code, h, _, _ = curl(work, d.base + "/actions/retry-all", *extra)
            check(code == 405 and h.get("allow") == "POST",
                  "%s /actions/retry-all: 405, Allow: POST" % method)
        code, _, _, _ = curl(work, d.base + "/", "-X", "TRACE")
        check(code in (405, 501), "TRACE is not served")
        code, _, _, _ = curl(work, d.base + "/healthz")
        check(code == 200, "still serving")


def test_oversized(work):
    with Demo(work) as d:
        code, _, _, _ = curl(work, d.base + "/metrics",
                             "-H", "X-Big: " + "a" * 20000)
        check(code == 431, "20 KB of headers: 431")
        code, _, _, _ = curl(work, d.base + "/?" + "a" * 20000)
        check(code == 414, "a 20 KB URL: 414")
        big = os.path.join(work, "big.bin")
        with open(big, "wb") as f:
            f.write(b"x" * (8 << 20))
        t0 = time.time()
        code, h, _, _ = curl(work, d.base + "/actions/retry",
                             "--data-binary", "@" + big)
        check(code == 413, "an 8 MB body: 413 (%.2f s)" % (time.time() - t0))
        check(h.get("connection") == "close", "... and the connection closes")
        code, _, _, _ = curl(work, d.base + "/", "-X", "GET",
                             "--data-binary", "@" + big)
        check(code == 413, "a GET with a body: 413")
        code, _, _, _ = curl(work, d.base + "/actions/retry-all", "-H",
                             "Transfer-Encoding: chunked",
                             "--data-binary", "@" + big)
        check(code == 413, "a chunked body: 413")
        code, _, _, _ = curl(work, d.base + "/healthz")
        check(code == 200, "still serving")


def test_not_ready(work):
    with Demo(work, "--not-ready") as d:
        code, j = get_json(work, d.base + "/readyz")
        check(code == 503 and j["ready"] is False, "/readyz 503")
        check("not listening" in j["checks"]["dicom_port"],
              "says the DICOM port is not listening: " +
              j["checks"]["dicom_port"])
        check("below spool.min_free_mb" in j["checks"]["spool"],
              "says the spool is low: " + j["checks"]["spool"])
        check("valid token" in j["checks"]["destination"],
              "says the destination was not reached: " +
              j["checks"]["destination"])
        code, j = get_json(work, d.base + "/healthz")
        check(code == 200, "/healthz is about the loop only: 200")
        code, _, body, _ = curl(work, d.base + "/")
        check(code == 200 and b"Not ready" in body, "the page says Not ready")


def test_healthz_stale(work):
    with Demo(work, "--stale-s", "1") as d:
        code, j = get_json(work, d.base + "/healthz")
        check(code == 200, "/healthz 200 while the loop beats")
        d.proc.send_signal(signal.SIGUSR1)        # the loop stops beating
        eventually(lambda: curl(work, d.base + "/healthz")[0] == 503, 10,
                   "/healthz goes stale without heartbeats")
        code, j = get_json(work, d.base + "/healthz")
        check(code == 503 and j["status"] == "stale" and
              "has not run for" in j["error"], "/healthz 503: " + j["error"])


# ---- access rules ---------------------------------------------------------

def write_token(work, value=TOKEN):
    path = os.path.join(work, "admin.token")
    with open(path, "w") as f:
        f.write(value + "\n")
    os.chmod(path, 0o600)
    return path


def test_token_required(work):
    for listen in ("0.0.0.0:0", "[::]:0", "10.0.0.1:0"):
        r = it.run([DEMO, "--listen", listen], timeout=20, input="")
        check(r.returncode != 0 and "port=" not in r.stdout,
              "%s without a token: refused before listening" % listen)
        check("is not a loopback address: set admin.token_file" in r.stderr,
              "... saying why: " + r.stderr.strip())
    r = it.run([DEMO, "--actions"], timeout=20, input="")
    check(r.returncode != 0 and
          "admin.allow_actions needs admin.token_file" in r.stderr,
          "actions without a token: refused: " + r.stderr.strip())
    with Demo(work, "--listen", "[::1]:0") as d:
        code, _, _, _ = curl(work, "http://[::1]:%d/healthz" % d.port)
        check(code == 200, "[::1] without a token is fine")


def test_token_reads(work):
    token = write_token(work)
    with Demo(work, "--token-file", token) as d:
        for path in ("/", "/metrics"):
            code, h, _, _ = curl(work, d.base + path)
            check(code == 401 and h.get("www-authenticate", "")
                  .startswith("Basic"), "%s without the token: 401" % path)
            code, _, _, _ = curl(work, d.base + path, "-H",
                                 "Authorization: Bearer wrong")
            check(code == 401, "%s with a wrong token: 401" % path)
            code, _, _, _ = curl(work, d.base + path, "-H",
                                 "Authorization: Bearer " + TOKEN)
            check(code == 200, "%s with the bearer token: 200" % path)
            code, _, _, _ = curl(work, d.base + path, "-u", "ops:" + TOKEN)
            check(code == 200, "%s with Basic, token as password: 200" % path)
        for path in ("/healthz", "/readyz"):
            code, _, _, _ = curl(work, d.base + path)
            check(code == 200, "%s needs no token (probes)" % path)
        code, _, _, _ = curl(work, d.base + "/", "-H",
                             "Host: bridge.hospital.example", "-H",
                             "Authorization: Bearer " + TOKEN)
        check(code == 200, "with a token, any Host name is served")


def metrics_text(work, d, *auth):
    code, _, body, _ = curl(work, d.base + "/metrics", *auth)
    check(code == 200, "/metrics 200")
    return body.decode()


def test_actions(work):
    token = write_token(work)
    bearer = ["-H", "Authorization: Bearer " + TOKEN]
    with Demo(work, "--token-file", token) as d:
        code, _, body, _ = curl(work, d.base + "/actions/retry-all", "-X",
                                "POST", *bearer)
        check(code == 403 and b"actions are off" in body,
              "actions off: 403 even with the token")
    with Demo(work, "--token-file", token, "--actions") as d:
        url = d.base + "/actions/retry?id=" + FAILED_ID
        refused = [
            ([], 401, "no Authorization"),
            (["-H", "Authorization: Bearer wrong"], 401, "a wrong token"),
            (["-H", "Authorization: Bearer " + TOKEN[:-1]], 401,
             "a token one character short"),
            (["-u", "ops:" + TOKEN], 401, "Basic (a browser sends it by "
             "itself)"),
            (bearer + ["-H", "Origin: http://evil.example"], 403,
             "a foreign Origin"),
            (bearer + ["-H", "Origin: null"], 403, "Origin: null"),
            (bearer + ["-H", "Sec-Fetch-Site: cross-site"], 403,
             "Sec-Fetch-Site: cross-site"),
            (bearer + ["-H", "Sec-Fetch-Site: same-site"], 403,
             "Sec-Fetch-Site: same-site"),
            (["-H", "Content-Type: application/x-www-form-urlencoded",
              "--data", "id=" + FAILED_ID], 413, "a form post"),
        ]
        for extra, want, what in refused:
            code, _, body, _ = curl(work, url, "-X", "POST", *extra)
            check(code == want, "action with %s: %d (%s)"
                  % (what, code, body.decode().strip()))
        check("admin_demo_actions_total{" not in metrics_text(work, d,
                                                              *bearer),
              "none of the refused actions ran")
        for bad, want in (("", 400), ("../../etc/passwd", 400),
                          ("1763000000.000000-0000000000000000", 404)):
            code, _, _, _ = curl(work, d.base + "/actions/retry?id=" +
                                 urllib.parse.quote(bad), "-X", "POST",
                                 *bearer)
            check(code == want, "retry of %r: %d" % (bad, want))
        code, j = get_json(work, url, "-X", "POST", *bearer)
        check(code == 200 and j == {"retried": 1, "id": FAILED_ID},
              "retry with the bearer token: 200 " + json.dumps(j))
        code, j = get_json(work, url, "-X", "POST", *bearer, "-H",
                           "Origin: http://127.0.0.1:%d" % d.port, "-H",
                           "Sec-Fetch-Site: same-origin")
        check(code == 200, "same-origin retry: 200")
        code, j = get_json(work, d.base + "/actions/retry-all", "-X", "POST",
                           *bearer)
        check(code == 200 and j == {"retried": 987}, "retry-all: 200")
        text = metrics_text(work, d, *bearer)
        check('admin_demo_actions_total{action="retry"} 2\n' in text and
              'admin_demo_actions_total{action="retry_all"} 1\n' in text,
              "exactly the accepted actions ran")


# ---- load -------------------------------------------------------------------

def parallel_curl(urls, source=None, timeout=60):
    """All URLs at once with curl's parallel mode; returns [(code, exit)]."""
    cmd = ["curl", "-s", "-Z", "--parallel-immediate", "--parallel-max",
           str(len(urls)), "--max-time", "30",
           "-w", "%{http_code} %{exitcode}\n"]
    if source:
        cmd += ["--interface", source]
    for u in urls:
        cmd += ["-o", "/dev/null", u]
    r = it.run(cmd, timeout=timeout)
    out = []
    for line in r.stdout.split("\n"):
        if line.strip():
            code, ex = line.split()
            out.append((int(code), int(ex)))
    return out


def timed_get(url, source, seconds):
    t0 = time.time()
    r = it.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                "--interface", source, "--max-time", str(seconds), url],
               timeout=seconds + 10)
    return r.stdout, time.time() - t0


def test_flood(work):
    with Demo(work) as d:
        urls = [d.base + p for p in ("/", "/metrics", "/healthz",
                                     "/readyz")] * 50
        result = {}

        def flood():
            result["t0"] = time.time()
            result["out"] = parallel_curl(urls)
            result["t"] = time.time() - result["t0"]

        th = threading.Thread(target=flood)
        th.start()
        time.sleep(0.2)
        other, took = timed_get(d.base + "/healthz", "127.0.0.2", 10)
        th.join(120)
        out = result.get("out", [])
        served = sum(1 for c, _ in out if c == 200)
        refused = [(c, e) for c, e in out if c != 200]
        print("flood of %d from one address: %d served, %d refused at the "
              "connection (%s) in %.1f s" % (len(out), served, len(refused),
                                             sorted(set(refused)),
                                             result.get("t", -1)))
        check(len(out) == 200, "all 200 requests finished")
        check(all(c == 0 and e in (7, 52, 55, 56) for c, e in refused),
              "the requests over the per-address limit were closed at once, "
              "none hung or got an error page")
        check(served >= 16, "at least the per-address limit was served")
        check(other == "200" and took < 5, "meanwhile another client got "
              "/healthz in %.2f s" % took)

        # 200 clients from 200 addresses: past the connection limit they
        # wait in the listen queue, and every one is served.
        codes = []
        lock = threading.Lock()
        barrier = threading.Barrier(200)

        def one(i):
            src = "127.0.1.%d" % (i + 1)
            try:
                barrier.wait(30)
                s = socket.create_connection(("127.0.0.1", d.port), 30,
                                             source_address=(src, 0))
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"Connection: close\r\n\r\n")
                data = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                s.close()
                code = int(data.split(b" ", 2)[1]) if data else 0
            except OSError as e:
                code = str(e)
            with lock:
                codes.append(code)

        t0 = time.time()
        threads = [threading.Thread(target=one, args=(i,))
                   for i in range(200)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        took = time.time() - t0
        check(codes.count(200) == 200, "200 concurrent clients from 200 "
              "addresses: all served in %.1f s (%s)"
              % (took, sorted(set(map(str, codes)))))
        code, _, _, _ = curl(work, d.base + "/metrics")
        check(code == 200, "still serving after the floods")


def slow_clients(port, sources, step=0.5, limit=15.0):
    """Opens one connection per source address, then sends a request one
    byte every STEP seconds, never finishing it. Returns each
    connection's lifetime (until the server closed it) in seconds, or None
    if it was still open after LIMIT seconds."""
    conns = []
    for src in sources:
        s = socket.socket()
        s.bind((src, 0))
        s.settimeout(5)
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        conns.append([s, time.time(), None])
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 1000
    pos = 0
    t_end = time.time() + limit
    while time.time() < t_end and any(c[2] is None for c in conns):
        for c in conns:
            if c[2] is not None:
                continue
            try:
                c[0].send(request[pos:pos + 1])
            except OSError:
                c[2] = time.time() - c[1]
        pos = min(pos + 1, len(request) - 1)
        deadline = time.time() + step
        while time.time() < deadline:
            open_socks = [c[0] for c in conns if c[2] is None]
            if not open_socks:
                break
            ready, _, _ = select.select(open_socks, [], [],
                                        max(0, deadline - time.time()))
            for c in conns:
                if c[0] in ready and c[2] is None:
                    try:
                        data = c[0].recv(4096)
                    except OSError:
                        data = b""
                    if not data:
                        c[2] = time.time() - c[1]
    for c in conns:
        c[0].close()
    return [c[2] for c in conns]


def test_slowloris(work):
    with Demo(work, "--timeout-s", "3") as d:
        # 64 slow clients from 64 addresses fill the connection table.
        result = {}

        def attack():
            result["lives"] = slow_clients(
                d.port, ["127.0.2.%d" % (i + 1) for i in range(64)])

        th = threading.Thread(target=attack)
        th.start()
        time.sleep(1.0)
        code, took = timed_get(d.base + "/healthz", "127.0.0.1", 20)
        th.join(60)
        lives = result.get("lives", [])
        print("slow connections lived (s): %s" % " ".join(
            "%.1f" % x if x is not None else "open" for x in lives))
        check(len(lives) == 64 and all(x is not None and x < 8 for x in lives),
              "every slow client was cut off after the 3 s request deadline, "
              "although it kept sending")
        check(code == "200" and took < 8, "a normal request got through "
              "while the table was full, in %.1f s" % took)

        # One address cannot hold more than the per-address limit (16).
        socks = []
        for _ in range(30):
            s = socket.socket()
            s.bind(("127.0.3.1", 0))
            s.connect(("127.0.0.1", d.port))
            socks.append(s)
        time.sleep(1.0)
        closed = 0
        for s in socks:
            s.setblocking(False)
            try:
                if s.recv(1) == b"":
                    closed += 1
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
            s.close()
        check(closed == 14, "30 connections from one address: 14 closed at "
              "once (limit 16), got %d" % closed)
        code, _, _, _ = curl(work, d.base + "/healthz")
        check(code == 200, "still serving")


# ---- a real browser ----------------------------------------------------------

def chromium(work, *args, timeout=120):
    profile = os.path.join(work, "chromium-profile-%d" % time.monotonic_ns())
    os.makedirs(profile)
    env = dict(os.environ, HOME=work)
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--disable-dev-shm-usage",
           "--user-data-dir=" + profile, *args]
    with open(os.path.join(work, "chromium.log"), "ab") as log:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log,
                           timeout=timeout, env=env)
    return r


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    check(head[:8] == b"\x89PNG\r\n\x1a\n", "%s is a PNG" % path)
    return struct.unpack(">II", head[16:24])


def test_chromium(work):
    if not os.access(CHROMIUM, os.X_OK):
        raise Skip("chromium is not installed (Debian package chromium)")
    os.makedirs(OUT_DIR, exist_ok=True)
    with Demo(work, "--refresh-s", "30") as d:
        r = chromium(work, "--dump-dom", d.base + "/")
        dom = r.stdout.decode("utf-8", "replace")
        check(r.returncode == 0 and "</html>" in dom,
              "headless Chromium loaded the page")
        def row(state):
            start = dom.find('<tr id="backlog-%s">' % state)
            return dom[start:dom.find("</tr>", start)] if start >= 0 else ""
        check('<td class="n">61234</td>' in row("incoming"),
              "the DOM shows 61234 incoming")
        check('<td class="n">37763</td>' in row("deferred"),
              "the DOM shows 37763 deferred")
        check('<td class="n">987</td>' in row("failed"),
              "the DOM shows 987 failed")
        reason = FAILED_REASON.replace("<", "&lt;").replace(">", "&gt;")
        check(FAILED_ID in dom and reason in dom,
              "the DOM shows the failed entry with its reason")
        check("Ready" in dom and "client_credentials" in dom and
              "DICOM Data Owner" in dom, "the DOM shows readiness and token")
        for name, size in (("status-desktop.png", "1280,2400"),
                           ("status-phone.png", "390,2600")):
            shot = os.path.join(work, name)
            r = chromium(work, "--screenshot=" + shot, "--window-size=" + size,
                         "--hide-scrollbars", d.base + "/")
            check(r.returncode == 0 and os.path.exists(shot) and
                  os.path.getsize(shot) > 20000, "screenshot " + name)
            w, h = png_size(shot)
            check((w, h) == tuple(map(int, size.split(","))),
                  "%s is %dx%d" % (name, w, h))
            shutil.copy(shot, os.path.join(OUT_DIR, name))
        print("screenshots in", OUT_DIR)


# ---- a real Prometheus server ---------------------------------------------

def prom_query(port, query):
    url = ("http://127.0.0.1:%d/api/v1/query?query=" % port +
           urllib.parse.quote(query))
    with urllib.request.urlopen(url, timeout=10) as r:
        j = json.load(r)
    if j.get("status") != "success":
        raise Failure("query %s: %s" % (query, j))
    return j["data"]["result"]


def prom_value(port, query):
    try:
        result = prom_query(port, query)
    except OSError:
        return None
    return float(result[0]["value"][1]) if result else None


def test_prometheus(work):
    if not os.access(PROMETHEUS, os.X_OK):
        raise Skip("prometheus is not installed (Debian package prometheus)")
    token = write_token(work)
    with Demo(work, "--token-file", token) as d:
        prom_port = it.free_port()
        config = os.path.join(work, "prometheus.yml")
        with open(config, "w") as f:
            f.write("""global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - %s
scrape_configs:
  - job_name: stowbridge
    authorization:
      credentials_file: %s
    static_configs:
      - targets: ['127.0.0.1:%d']
  - job_name: stowbridge_without_token
    static_configs:
      - targets: ['127.0.0.1:%d']
""" % (os.path.abspath(ALERTS), token, d.port, d.port))
        log = open(os.path.join(work, "prometheus.log"), "wb")
        prom = subprocess.Popen(
            [PROMETHEUS, "--config.file=" + config,
             "--storage.tsdb.path=" + os.path.join(work, "tsdb"),
             "--web.listen-address=127.0.0.1:%d" % prom_port],
            stdout=log, stderr=subprocess.STDOUT)
        try:
            def ready():
                try:
                    with urllib.request.urlopen(
                            "http://127.0.0.1:%d/-/ready" % prom_port,
                            timeout=2) as r:
                        return r.status == 200
                except OSError:
                    return False
            it.wait_for(ready, 90, "prometheus to be ready")
            eventually(lambda: prom_value(prom_port,
                                          'up{job="stowbridge"}') == 1, 60,
                       "Prometheus scraped /metrics with the bearer token: "
                       "up == 1")
            eventually(lambda: prom_value(
                prom_port, 'up{job="stowbridge_without_token"}') == 0, 60,
                "without the token the scrape fails: up == 0")
            v = prom_value(prom_port, 'stowbridge_received_instances_total'
                           '{job="stowbridge",calling_ae="CT01"}')
            check(v == 1234, "the CT01 counter through the HTTP API: %s" % v)
            v = prom_value(prom_port, 'stowbridge_upload_request_duration_'
                           'seconds_count{job="stowbridge"}')
            check(v == 50, "the histogram's count: %s" % v)
            eventually(lambda: (prom_value(
                prom_port, 'rate(stowbridge_received_instances_total'
                '{job="stowbridge",calling_ae="MR02"}[5s])') or 0) > 0, 60,
                "rate() over a counter that moves is > 0")

            # The shipped alert rules load, evaluate without error, and the
            # one whose condition holds (987 failed entries) is pending.
            def prom_get(path):
                with urllib.request.urlopen(
                        "http://127.0.0.1:%d%s" % (prom_port, path),
                        timeout=10) as r:
                    return json.load(r)["data"]

            def rules_ok():
                rules = [r for g in prom_get("/api/v1/rules")["groups"]
                         for r in g["rules"]]
                return (len(rules) == 5 and
                        all(r["health"] == "ok" for r in rules))
            eventually(rules_ok, 60, "the 5 alert rules of admin/alerts.yml "
                       "evaluate without error")
            eventually(lambda: sorted(
                (a["labels"]["alertname"], a["state"])
                for a in prom_get("/api/v1/alerts")["alerts"]
                if a["labels"].get("job") == "stowbridge") ==
                [("StowbridgeFailedEntries", "pending")], 60,
                "exactly StowbridgeFailedEntries is pending")
        finally:
            prom.send_signal(signal.SIGTERM)
            try:
                prom.wait(30)
            except subprocess.TimeoutExpired:
                prom.kill()
                prom.wait()
            log.close()


def main():
    global DEMO, OUT_DIR
    DEMO, OUT_DIR, name = sys.argv[1], sys.argv[2], sys.argv[3]
    test = globals().get("test_" + name)
    if test is None:
        print("no such test:", name)
        return 2
    if not shutil.which("curl"):
        print("SKIP: curl is not installed")
        return SKIP
    try:
        return it.run_test(test, name)
    except Skip as e:
        print("SKIP:", e)
        return SKIP


if __name__ == "__main__":
    sys.exit(main())
