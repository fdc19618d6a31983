#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Integration tests of the credentials (issue 13) through the real
stowbridge binary: `run` (the daemon uploading with DCMTK's storescu as
the sender), `token` and `check`.

usage: cred_it.py BINARY CRAFT_SCU TEST

Peers, all on loopback and random ports:
- oidc-provider (npm, tests/oidc/server.mjs) verifying private_key_jwt,
  PS256 and RS256;
- tests/unit/identity_server.py: the Azure VM instance metadata endpoint
  and the Azure Arc agent's challenge;
- a token endpoint here (TokenServer) that checks secrets and records
  client assertions;
- a fake Azure CLI (tests/unit/fake_bin/az);
- it.py's MockWeb as the DICOMweb server.
Each TEST is one function test_<name>; 77 means skipped.
"""
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import it  # noqa: E402
from it import Failure, check, run, storescu, acknowledged_files  # noqa

SRC = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
IDENTITY_SERVER = os.path.join(SRC, "tests", "unit", "identity_server.py")
FAKE_BIN = os.path.join(SRC, "tests", "unit", "fake_bin")
OIDC_DIR = os.path.join(SRC, "tests", "oidc")
ARC_DIR = "/var/opt/azcmagent/tokens"


class TokenServer:
    """POST /token: client_credentials with a secret (checked against
    .secrets) or a client assertion (recorded); tokens are unsigned JWTs
    living .lifetime seconds. .mode "70021" answers as Entra does when no
    federated credential matches."""

    def __init__(self, lifetime=3600, secrets=None):
        self.lifetime = lifetime
        self.secrets = set(secrets or [])
        self.mode = "ok"
        self.forms = []
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def reply(self, status, obj):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                form = dict(urllib.parse.parse_qsl(self.rfile.read(n).decode()))
                with server.lock:
                    server.forms.append(form)
                    mode = server.mode
                if mode == "70021":
                    return self.reply(400, {
                        "error": "invalid_client",
                        "error_description": "AADSTS70021: No matching "
                        "federated identity record found for presented "
                        "assertion.\r\nTrace ID: 1", "error_codes": [70021]})
                if "client_secret" in form and \
                        form["client_secret"] not in server.secrets:
                    return self.reply(401, {
                        "error": "invalid_client",
                        "error_description": "AADSTS7000215: Invalid client "
                        "secret provided.", "error_codes": [7000215]})
                now = int(time.time())
                self.reply(200, {
                    "access_token": it.jwt({"aud": "https://dicom.example.org",
                                            "oid": "sp-cred", "idtyp": "app",
                                            "appid": form.get("client_id"),
                                            "exp": now + server.lifetime,
                                            "iat": now}),
                    "token_type": "Bearer", "expires_in": server.lifetime})

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                      Handler)
        self.port = self.server.server_address[1]
        self.url = "http://127.0.0.1:%d/token" % self.port
        threading.Thread(target=self.server.serve_forever,
                         daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Peer:
    """A helper process that prints "PORT <n>" once it listens."""

    def __init__(self, argv, log_path, cwd=None):
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE,
                                     stderr=self.log, cwd=cwd)
        line = self.proc.stdout.readline().decode()
        if not line.startswith("PORT "):
            raise Failure("%s did not start: %r" % (argv[0], line))
        self.port = int(line.split()[1])

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def make_cert(work, name, days=365):
    """A self-signed RSA certificate and its key (0600) made by openssl."""
    cert = os.path.join(work, name + ".crt")
    key = os.path.join(work, name + ".key")
    r = run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
             "-keyout", key, "-out", cert, "-days", str(days),
             "-subj", "/CN=stowbridge-" + name])
    check(r.returncode == 0, "openssl made certificate " + name)
    os.chmod(key, 0o600)
    return cert, key


def write_config(work, name, mock, auth, **sections):
    cfg = {
        "spool": {"dir": os.path.join(work, "spool-" + name),
                  "min_free_mb": 0, "journal_mb": 8},
        "dicom": {"port": it.free_port()},
        "upload": {"url": "http://127.0.0.1:%d/dicom-web" % mock.port,
                   "timeout_s": 5},
        "auth": auth,
    }
    cfg.update(sections)
    path = os.path.join(work, name + ".json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    os.chmod(path, 0o644)
    return path


def daemon(work, mock, auth, **extra):
    sections = {"upload": {"url": "http://127.0.0.1:%d/dicom-web" % mock.port,
                           "timeout_s": 5},
                "auth": auth, "retry": {"min_s": 1, "max_s": 4},
                "log": {"level": "debug"}}
    for k, v in extra.items():
        sections.setdefault(k, {}).update(v)
    return it.Daemon(work, **sections)


def store(d, work, count, tag):
    files, uids = [], set()
    for i in range(count):
        p = os.path.join(work, "%s-%d.dcm" % (tag, i))
        uids.add(it.make_instance(p, size=16))
        files.append(p)
    r = storescu(d.port, files)
    check(len(acknowledged_files(r.stdout + r.stderr)) == count,
          "%d instances stored (%s)" % (count, tag))
    return uids


def delivered(d, mock, uids, seconds=30):
    it.wait_for(lambda: uids <= set(mock.stored) and it.spool_empty(d),
                seconds, "uploads")
    return True


def no_failures(log):
    return "event=deferred" not in log and "event=failed" not in log


def write_atomic(path, text, mode=0o600):
    tmp = path + ".new"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.rename(tmp, path)


def federated_jwt(sub, exp_in=3600):
    now = int(time.time())
    return it.jwt({"iss": "https://k8s.example.org", "sub": sub,
                   "aud": "api://AzureADTokenExchange", "exp": now + exp_in,
                   "iat": now})


# ---------------------------------------------------------------------------

def test_cert_oidc(work):
    """private_key_jwt against oidc-provider: PS256 and RS256, a wrong
    key, a key of another certificate, and the daemon uploading."""
    if not os.path.isdir(os.path.join(OIDC_DIR, "node_modules",
                                      "oidc-provider")):
        r = run(["sh", os.path.join(OIDC_DIR, "setup.sh")], timeout=280)
        if r.returncode != 0:
            print("SKIP: oidc-provider cannot be installed:", r.stderr)
            sys.exit(it.SKIP)
    cert_a, key_a = make_cert(work, "a")
    cert_b, key_b = make_cert(work, "b")
    oidc = Peer(["node", os.path.join(OIDC_DIR, "server.mjs"), cert_a],
                os.path.join(work, "oidc.log"), cwd=OIDC_DIR)
    mock = it.MockWeb()
    try:
        url = "http://127.0.0.1:%d/token" % oidc.port

        def auth(client, cert, key, alg=None):
            a = {"type": "client_credentials", "token_url": url,
                 "client_id": client, "client_certificate_file": cert,
                 "client_key_file": key}
            if alg:
                a["assertion_alg"] = alg
            return a

        conf = write_config(work, "ps", mock, auth("bridge-ps256", cert_a,
                                                   key_a))
        r = run([it.BINARY, "token", "--config", conf])
        check(r.returncode == 0 and "token: obtained" in r.stdout and
              "a certificate (private_key_jwt)" in r.stdout,
              "PS256 assertion accepted by oidc-provider\n" + r.stdout)
        conf = write_config(work, "rs", mock, auth("bridge-rs256", cert_a,
                                                   key_a, "RS256"))
        r = run([it.BINARY, "token", "--config", conf])
        check(r.returncode == 0, "RS256 assertion accepted\n" + r.stdout)
        conf = write_config(work, "mixed", mock, auth("bridge-rs256", cert_a,
                                                      key_a))
        r = run([it.BINARY, "token", "--config", conf])
        check(r.returncode == 1 and "invalid_client" in r.stdout,
              "a PS256 assertion for the RS256-only client is refused")

        conf = write_config(work, "wrong", mock, auth("bridge-ps256", cert_b,
                                                      key_b))
        r = run([it.BINARY, "token", "--config", conf])
        check(r.returncode == 1 and "AADSTS700027" in r.stdout and
              "certificate" in r.stdout,
              "a key the server does not know: the AADSTS700027 sentence\n"
              + r.stdout)
        check("eyJ" not in r.stdout, "no assertion in the output")

        conf = write_config(work, "mismatch", mock, auth("bridge-ps256",
                                                         cert_a, key_b))
        r = run([it.BINARY, "check", "--config", conf])
        check(r.returncode == 1 and "certificate: FAILED" in r.stdout,
              "check: a key of another certificate is refused\n" + r.stdout)

        conf = write_config(work, "check", mock, auth("bridge-ps256", cert_a,
                                                      key_a))
        r = run([it.BINARY, "check", "--config", conf])
        check(r.returncode == 0 and "the key matches" in r.stdout and
              "dicomweb: ok" in r.stdout, "check: certificate ok\n" + r.stdout)
        soon_cert, soon_key = make_cert(work, "soon", days=10)
        conf = write_config(work, "soon", mock, auth("bridge-ps256",
                                                     soon_cert, soon_key))
        r = run([it.BINARY, "check", "--config", conf])
        check("certificate: warning:" in r.stdout,
              "check warns of a certificate expiring in 10 days\n" + r.stdout)

        bad = dict(auth("bridge-ps256", cert_a, key_a),
                   client_secret="s3cret-x")
        conf = write_config(work, "both", mock, bad)
        r = run([it.BINARY, "check", "--config", conf])
        check(r.returncode == 2 and "auth.client_secret" in r.stderr and
              "auth.client_certificate_file" in r.stderr,
              "a secret and a certificate: the error names both keys: " +
              r.stderr.strip())

        # The daemon: uploads with assertions; then SIGHUP with a broken key
        # keeps the old one.
        key_copy = os.path.join(work, "live.key")
        shutil.copy(key_a, key_copy)
        os.chmod(key_copy, 0o600)
        d = daemon(work, mock, auth("bridge-ps256", cert_a, key_copy)).start()
        uids = store(d, work, 5, "cert")
        delivered(d, mock, uids)
        check(all(h and h.startswith("Bearer ") for h in mock.auth_headers),
              "every STOW-RS request carries the token")
        write_atomic(key_copy, "-----BEGIN PRIVATE KEY-----\nbroken\n"
                     "-----END PRIVATE KEY-----\n")
        d.proc.send_signal(signal.SIGHUP)
        it.wait_for(lambda: "event=reload-failed" in d.log_text(), 15,
                    "reload failure logged")
        check(d.alive(), "the daemon keeps running after a broken key")
        uids |= store(d, work, 3, "cert2")
        delivered(d, mock, uids)
        log = d.log_text()
        check(no_failures(log) and "eyJ" not in log,
              "no failed upload, no token or assertion in the log")
        check(d.stop() == 0, "clean stop")
    finally:
        mock.close()
        oidc.close()


def identity_server(work, token_dir):
    return Peer([sys.executable, IDENTITY_SERVER, token_dir],
                os.path.join(work, "identity.log"))


def test_imds(work):
    """auth.type managed_identity against a scripted VM instance metadata
    endpoint: 10-second tokens refreshed while uploads run, `token`, the
    403 diagnosis naming the managed identity, an unassigned identity."""
    idp = identity_server(work, work)
    mock = it.MockWeb()
    try:
        base = "http://127.0.0.1:%d/imds/%%s/metadata/identity/oauth2/token" \
            % idp.port
        auth = {"type": "managed_identity", "endpoint": base % "short"}
        conf = write_config(work, "mi", mock, auth)
        r = run([it.BINARY, "token", "--config", conf])
        check(r.returncode == 0 and "mi-object-id" in r.stdout,
              "token from the instance metadata endpoint\n" + r.stdout)
        mock.studies_status = 403
        r = run([it.BINARY, "check", "--config", conf])
        line = [l for l in r.stdout.splitlines()
                if l.startswith("dicomweb: FAILED")]
        check(r.returncode == 1 and line and "HTTP 403" in line[0] and
              "oid=mi-object-id" in line[0] and "managed identity" in
              line[0], "403: the managed identity is named\n" + r.stdout)
        mock.studies_status = 200
        conf = write_config(work, "mi-none", mock, dict(
            auth, endpoint=base % "noidentity"))
        r = run([it.BINARY, "token", "--config", conf])
        check(r.returncode == 1 and "FAILED" in r.stdout,
              "no identity assigned: said so: " + r.stdout.strip())
        conf = write_config(work, "mi-secret", mock, dict(
            auth, client_secret="x"))
        r = run([it.BINARY, "check", "--config", conf])
        check(r.returncode == 2 and "auth.client_secret" in r.stderr,
              "a secret with managed_identity is a config error")

        d = daemon(work, mock, auth).start()
        uids = set()
        start = time.time()
        while time.time() - start < 24:
            uids |= store(d, work, 2, "mi%d" % len(uids))
            time.sleep(1)
        delivered(d, mock, uids)
        with open(os.path.join(work, "identity.log")) as f:
            count = f.read().count("/imds/short/")
        log = d.log_text()
        check(no_failures(log), "no upload failed across the refreshes")
        check(count >= 3, "%d token requests for 24 s of 10 s tokens" % count)
        check(d.stop() == 0, "clean stop")
    finally:
        mock.close()
        idp.close()


def test_arc(work):
    """Azure Arc through the daemon: the challenge file from
    /var/opt/azcmagent/tokens; an oversize file, one outside the
    directory, one this user cannot read (run as nobody), a user-assigned
    identity."""
    if os.geteuid() != 0:
        print("SKIP: needs root to create", ARC_DIR)
        sys.exit(it.SKIP)
    if os.path.exists("/var/opt/azcmagent"):
        print("SKIP: /var/opt/azcmagent exists (a real Arc agent?): not "
              "touching it")
        sys.exit(it.SKIP)
    os.makedirs(ARC_DIR, 0o755)
    os.makedirs("/tmp/elsewhere", exist_ok=True)
    stolen = "/tmp/elsewhere/stolen.key"
    mock = it.MockWeb()
    idp = None
    try:
        def put(path, data, mode):
            with open(path, "w") as f:
                f.write(data)
            os.chmod(path, mode)

        put(os.path.join(ARC_DIR, "ok.key"), "k" * 64 + "\n", 0o600)
        put(os.path.join(ARC_DIR, "big.key"), "b" * 5000, 0o600)
        put(os.path.join(ARC_DIR, "locked.key"), "l" * 64, 0o600)
        put(stolen, "s" * 64, 0o600)
        idp = identity_server(work, ARC_DIR)
        env_base = "http://127.0.0.1:%d/arc/%%s/metadata/identity/oauth2/" \
            "token" % idp.port

        def arc_env(scenario):
            env = dict(os.environ)
            env["IDENTITY_ENDPOINT"] = env_base % scenario
            env["IMDS_ENDPOINT"] = "http://127.0.0.1:%d" % idp.port
            return env

        auth = {"type": "managed_identity"}
        conf = write_config(work, "arc", mock, auth)
        r = run([it.BINARY, "check", "--config", conf], env=arc_env("short"))
        check("managed identity: Azure Arc" in r.stdout and
              r.returncode == 0,
              "check: Azure Arc detected from IDENTITY_ENDPOINT and "
              "IMDS_ENDPOINT, token and DICOMweb ok\n" + r.stdout)
        r = run([it.BINARY, "token", "--config", conf], env=arc_env("short"))
        check(r.returncode == 0 and "arc-object-id" in r.stdout,
              "token through the Arc challenge\n" + r.stdout + r.stderr)
        r = run([it.BINARY, "token", "--config", conf],
                env=arc_env("oversize"))
        check(r.returncode == 1 and "4096" in r.stdout,
              "an oversize challenge file is refused: " + r.stdout.strip())
        r = run([it.BINARY, "token", "--config", conf],
                env=arc_env("wrongdir"))
        check(r.returncode == 1 and "refused" in r.stdout and
              ARC_DIR in r.stdout,
              "a challenge file outside the token directory is refused: " +
              r.stdout.strip())
        check("s" * 64 not in r.stdout, "and never read out")
        # As a user without the himds group: the file cannot be read.
        os.chmod(work, 0o755)
        r = run(["setpriv", "--reuid=65534", "--regid=65534",
                 "--clear-groups", it.BINARY, "token", "--config", conf],
                env=arc_env("perm"))
        check(r.returncode == 1 and "himds" in r.stdout,
              "a key file this user cannot read: the himds advice: " +
              r.stdout.strip())
        conf_id = write_config(work, "arc-id", mock,
                               dict(auth, client_id="user-assigned"))
        r = run([it.BINARY, "token", "--config", conf_id],
                env=arc_env("short"))
        check(r.returncode == 1 and "system-assigned" in r.stdout,
              "a user-assigned identity on Arc is refused")

        d = daemon(work, mock, auth).start(env=arc_env("short"))
        uids = store(d, work, 4, "arc")
        delivered(d, mock, uids)
        check(no_failures(d.log_text()), "uploads with the Arc token")
        check("k" * 64 not in d.log_text(), "the key is not logged")
        check(d.stop() == 0, "clean stop")
    finally:
        mock.close()
        if idp is not None:
            idp.close()
        shutil.rmtree("/var/opt/azcmagent", ignore_errors=True)
        try:
            os.unlink(stolen)
        except OSError:
            pass


def test_federated(work):
    """Workload identity: the federated token file re-read on every token
    request (rotated between two refreshes), AZURE_FEDERATED_TOKEN_FILE
    for azure, an expired file, Entra's AADSTS70021."""
    ts = TokenServer(lifetime=3)
    mock = it.MockWeb()
    try:
        fed = os.path.join(work, "federated-token")
        first = federated_jwt("system:serviceaccount:pacs:bridge-1")
        write_atomic(fed, first + "\n", 0o644)
        auth = {"type": "client_credentials", "token_url": ts.url,
                "client_id": "app-fed", "client_assertion_file": fed}
        d = daemon(work, mock, auth).start()
        uids = store(d, work, 2, "fed1")
        delivered(d, mock, uids)
        check(ts.forms and ts.forms[-1].get("client_assertion") == first and
              ts.forms[-1].get("client_assertion_type") ==
              "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
              "the federated token is the client assertion")
        second = federated_jwt("system:serviceaccount:pacs:bridge-2")
        write_atomic(fed, second + "\n", 0o644)   # as the kubelet does
        time.sleep(4)                             # past the 3 s token
        uids |= store(d, work, 2, "fed2")
        delivered(d, mock, uids)
        sent = [f.get("client_assertion") for f in ts.forms]
        check(first in sent and sent[-1] == second,
              "the rotated file is what the next refresh sent (%d requests)"
              % len(sent))
        check(no_failures(d.log_text()) and first not in d.log_text(),
              "no failed upload, no token in the log")
        check(d.stop() == 0, "clean stop")

        env = dict(os.environ, AZURE_FEDERATED_TOKEN_FILE=fed)
        conf = write_config(work, "azure-env", mock, {
            "type": "azure", "tenant": "72f988bf-86f1-41af-91ab-2d7cd011db47",
            "client_id": "app-env", "token_url": ts.url})
        r = run([it.BINARY, "token", "--config", conf], env=env)
        check(r.returncode == 0 and ts.forms[-1].get("client_assertion") ==
              second and ts.forms[-1].get("client_id") == "app-env",
              "azure: AZURE_FEDERATED_TOKEN_FILE used when no credential "
              "is configured\n" + r.stdout)
        r = run([it.BINARY, "token", "--config", conf])
        check(r.returncode == 2 and "client secret" in r.stderr,
              "without it, a credential is required")

        write_atomic(fed, federated_jwt("x", exp_in=-60), 0o644)
        conf = write_config(work, "fed-old", mock, auth)
        r = run([it.BINARY, "token", "--config", conf])
        check(r.returncode == 1 and "expired" in r.stdout,
              "an expired federated token: said so: " + r.stdout.strip())
        write_atomic(fed, second, 0o644)
        ts.mode = "70021"
        r = run([it.BINARY, "token", "--config", conf])
        check(r.returncode == 1 and "AADSTS70021" in r.stdout and
              "federated" in r.stdout,
              "AADSTS70021 explained: " + r.stdout.strip())
        conf = write_config(work, "fed-both", mock, dict(
            auth, client_secret_file=os.path.join(work, "nosuch")))
        r = run([it.BINARY, "check", "--config", conf])
        check(r.returncode == 2 and "auth.client_secret_file" in r.stderr and
              "auth.client_assertion_file" in r.stderr,
              "a secret and a federated token: both keys named")
    finally:
        mock.close()
        ts.close()


def fake_az_env(work, mode, extra=None):
    env = dict(os.environ)
    env["PATH"] = FAKE_BIN + ":" + env.get("PATH", "/usr/bin:/bin")
    env["FAKE_AZ_MODE"] = mode
    env["FAKE_AZ_PIDFILE"] = os.path.join(work, "az.pids")
    env["FAKE_AZ_COUNT"] = os.path.join(work, "az.count")
    env.update(extra or {})
    return env


def test_command(work):
    """auth.type command with a fake az: each JSON form, a SecureString,
    one that hangs (killed at the timeout), one that fails (exit status
    and scrubbed stderr), and the daemon refreshing 10-second tokens."""
    mock = it.MockWeb()
    try:
        auth = {"type": "command", "command_timeout_s": 3,
                "command": ["az", "account", "get-access-token",
                            "--resource",
                            "https://dicom.healthcareapis.azure.com",
                            "--output", "json"]}
        conf = write_config(work, "cmd", mock, auth)
        for mode in ("cli-epoch", "cli-epoch-string", "cli-local", "ps-iso",
                     "ps-msdate", "oauth"):
            r = run([it.BINARY, "token", "--config", conf],
                    env=fake_az_env(work, mode))
            check(r.returncode in (0, 1) and "token: obtained" in r.stdout
                  and "the command 'az'" in r.stdout,
                  "the %s form is understood" % mode)
        r = run([it.BINARY, "token", "--config", conf],
                env=fake_az_env(work, "ps-secure"))
        check(r.returncode == 1 and "SecureString" in r.stdout,
              "a SecureString token: said what to do")
        t0 = time.time()
        r = run([it.BINARY, "token", "--config", conf],
                env=fake_az_env(work, "hang"), timeout=30)
        took = time.time() - t0
        check(r.returncode == 1 and "3 s" in r.stdout and took < 15,
              "a hanging command is killed at auth.command_timeout_s "
              "(%.1f s): %s" % (took, r.stdout.strip()))
        with open(os.path.join(work, "az.pids")) as f:
            pids = [int(p) for p in f.read().split()]
        time.sleep(0.5)
        def running(pid):
            try:
                with open("/proc/%d/stat" % pid) as f:
                    return f.read().rsplit(")", 1)[1].split()[0] != "Z"
            except OSError:
                return False
        check(not any(running(p) for p in pids),
              "its whole process group is gone (killed: dead or zombies "
              "of a reparented child)")
        r = run([it.BINARY, "token", "--config", conf],
                env=fake_az_env(work, "fail"))
        check(r.returncode == 1 and "status 1" in r.stdout and
              "AADSTS70043" in r.stdout,
              "a failing command: exit status and stderr's first line: " +
              r.stdout.strip())
        check("eyJ0eXAi" not in r.stdout and "Zk8Q~abc" not in r.stdout and
              "second line" not in r.stdout,
              "token-shaped text scrubbed, only the first line")
        conf_bad = write_config(work, "cmd-empty", mock, {"type": "command"})
        r = run([it.BINARY, "check", "--config", conf_bad])
        check(r.returncode == 2 and "auth.command" in r.stderr,
              "command without auth.command: a config error")

        # A user's token (az login): a 403 names the user.
        mock.studies_status = 403
        r = run([it.BINARY, "check", "--config", conf],
                env=fake_az_env(work, "oauth10"))
        check(r.returncode == 1 and "this user" in r.stdout and
              "user-oid" in r.stdout, "403 with a user token: the user is "
              "named\n" + r.stdout)
        mock.studies_status = 200

        # The daemon: a failing command is an outage, logged without
        # secrets, then 10-second tokens refreshed while uploads run.
        d = daemon(work, mock, auth)
        d.start(env=fake_az_env(work, "fail"))
        store(d, work, 1, "cmdfail")
        it.wait_for(lambda: "event=deferred" in d.log_text(), 20,
                    "a deferred upload")
        log = d.log_text()
        check("status 1" in log and "AADSTS70043" in log and
              "Zk8Q~abc" not in log and "eyJ0eXAi" not in log,
              "the outage is logged with the exit status, scrubbed")
        check(d.stop() == 0, "clean stop")
        try:
            os.unlink(os.path.join(work, "az.count"))
        except OSError:
            pass
        d = daemon(work, mock, auth)
        d.start(env=fake_az_env(work, "oauth10"))
        uids = set()
        start = time.time()
        while time.time() - start < 24:
            uids |= store(d, work, 2, "cmd%d" % len(uids))
            time.sleep(1)
        delivered(d, mock, uids, 60)
        with open(os.path.join(work, "az.count")) as f:
            runs = len(f.read().split())
        log = d.log_text()
        deferred = log.count("event=deferred")
        check(runs >= 3, "%d command runs for 24 s of 10 s tokens" % runs)
        # The first daemon's deferred entry was delivered by this one.
        check("event=failed" not in log and deferred == 0,
              "no upload failed across the refreshes")
        check("eyJhbGciOiJub25lIn0" not in log, "no token in the log")
        check(d.stop() == 0, "clean stop")
    finally:
        mock.close()


def test_sighup(work):
    """SIGHUP with a new secret while uploads run: none fails; a broken
    secret file then keeps the current one and says why."""
    ts = TokenServer(lifetime=2, secrets={"first-secret"})
    mock = it.MockWeb()
    try:
        secret = os.path.join(work, "secret")
        write_atomic(secret, "first-secret\n")
        auth = {"type": "client_credentials", "token_url": ts.url,
                "client_id": "app-hup", "client_secret_file": secret}
        d = daemon(work, mock, auth).start()
        uids = set()
        errors = []
        stop = threading.Event()

        def sender():
            i = 0
            while not stop.is_set():
                try:
                    uids.update(store(d, work, 2, "hup%d" % i))
                except Failure as e:
                    errors.append(str(e))
                i += 1
                time.sleep(0.3)

        t = threading.Thread(target=sender)
        t.start()
        try:
            time.sleep(4)
            # Rotation as Entra allows it: both secrets valid for a while.
            ts.secrets.add("second-secret")
            write_atomic(secret, "second-secret\n")
            d.proc.send_signal(signal.SIGHUP)
            it.wait_for(lambda: "event=reloaded" in d.log_text(), 15,
                        "the reload")
            ts.secrets.discard("first-secret")
            n = len(ts.forms)
            time.sleep(5)
            later = ts.forms[n:]
            check(later and all(f.get("client_secret") == "second-secret"
                                for f in later),
                  "%d token requests after the reload, all with the new "
                  "secret" % len(later))
            write_atomic(secret, "")
            d.proc.send_signal(signal.SIGHUP)
            it.wait_for(lambda: "event=reload-failed" in d.log_text(), 15,
                        "the failed reload")
            time.sleep(4)
        finally:
            stop.set()
            t.join(60)
        check(not errors, "every C-STORE answered: %s" % errors[:1])
        delivered(d, mock, uids, 60)
        log = d.log_text()
        check(no_failures(log) and "status=401" not in log,
              "no upload failed during the rotations (%d instances)"
              % len(uids))
        check("keeping the current configuration and credentials" in log and
              "is empty" in log, "the broken file: old secret kept, why said")
        check("first-secret" not in log and "second-secret" not in log,
              "no secret in the log")
        check(ts.forms[-1].get("client_secret") == "second-secret",
              "still the second secret after the broken file")
        check(d.stop() == 0, "clean stop")
    finally:
        mock.close()
        ts.close()


def main():
    it.BINARY, it.CRAFT_SCU, name = sys.argv[1], sys.argv[2], sys.argv[3]
    test = globals().get("test_" + name)
    if test is None:
        print("no such test:", name)
        return 2
    return it.run_test(test, name)


if __name__ == "__main__":
    sys.exit(main())
