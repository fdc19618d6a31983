#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Token sources off the hot path (issue 13, Performance). Run on demand,
never in CI:

    bench/bench_cred.py [BUILD_DIR] [COUNT] [ROUNDS]

For each token source - a static token (the baseline), a client secret,
a certificate (private_key_jwt), a federated token file, the Azure VM
instance metadata endpoint (tests/unit/identity_server.py) and a token
command (tests/unit/fake_bin/az) - every one but the static token
issuing 10-second tokens: COUNT instances (default 1000) stored with one
storescu association into a fresh daemon, timed from the first C-STORE
until the DICOMweb server (tests/integration/it.py's MockWeb) holds them
all. ROUNDS (default 2) rounds, sources interleaved; prints instances per
second, the ratio to the static token and the token requests made.
"""
import os
import sys
import tempfile
import time
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
import it  # noqa: E402
import cred_it  # noqa: E402


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..",
                                                               "build")
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    it.BINARY = os.path.join(build, "bridge", "stowbridge")
    work = tempfile.mkdtemp(prefix="stowbridge-bench-cred-")
    results = {}
    try:
        files = []
        for i in range(count):
            p = os.path.join(work, "i%05d.dcm" % i)
            it.make_instance(p, study="1.2.3.%d" % (i // 100), size=64)
            files.append(p)
        cert, key = cred_it.make_cert(work, "bench")
        fed = os.path.join(work, "fed")
        cred_it.write_atomic(fed, cred_it.federated_jwt("bench"), 0o644)
        secret = os.path.join(work, "secret")
        cred_it.write_atomic(secret, "bench-secret\n")
        ts = cred_it.TokenServer(lifetime=10, secrets={"bench-secret"})
        idp = cred_it.identity_server(work, work)
        imds = "http://127.0.0.1:%d/imds/short/metadata/identity/oauth2/" \
            "token" % idp.port
        sources = [
            ("static", {"type": "static", "token": "static-token"}, None),
            ("secret", {"type": "client_credentials", "token_url": ts.url,
                        "client_id": "b", "client_secret_file": secret},
             None),
            ("certificate", {"type": "client_credentials",
                             "token_url": ts.url, "client_id": "b",
                             "client_certificate_file": cert,
                             "client_key_file": key}, None),
            ("federated", {"type": "client_credentials", "token_url": ts.url,
                           "client_id": "b", "client_assertion_file": fed},
             None),
            ("imds", {"type": "managed_identity", "endpoint": imds}, None),
            ("command", {"type": "command",
                         "command": ["az", "account", "get-access-token"]},
             cred_it.fake_az_env(work, "oauth10")),
        ]
        for r in range(rounds):
            for name, auth, env in sources:
                mock = it.MockWeb()
                d = cred_it.daemon(work, mock, auth,
                                   upload={"workers": 4})
                d.start(env=env)
                before = len(ts.forms)
                t0 = time.time()
                res = it.storescu(d.port, files, timeout=900)
                ok = len(it.acknowledged_files(res.stdout + res.stderr))
                it.wait_for(lambda: len(mock.stored) >= count, 900,
                            "uploads")
                took = time.time() - t0
                log = d.log_text()
                d.stop()
                mock.close()
                shutil.rmtree(d.spool, ignore_errors=True)
                tokens = len(ts.forms) - before
                results.setdefault(name, []).append(
                    (count / took, tokens, ok,
                     log.count("event=deferred")))
                print("round %d %-12s %7.1f inst/s  %5.1f s  stored=%d "
                      "token_requests(ts)=%d deferred=%d"
                      % (r + 1, name, count / took, took, ok, tokens,
                         log.count("event=deferred")), flush=True)
        ts.close()
        idp.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = sum(x[0] for x in results["static"]) / len(results["static"])
    print("\nsource        inst/s (mean)  ratio to static")
    for name, runs in results.items():
        mean = sum(x[0] for x in runs) / len(runs)
        print("%-12s  %12.1f  %6.3f" % (name, mean, mean / base))


if __name__ == "__main__":
    main()
