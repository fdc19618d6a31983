#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The guest half of the power-loss test (tests/power/README.md): runs as
root inside the qemu guest that power_test.py boots, on the host's own
root file system (read-only) with /run in tmpfs and the test's work
directory shared back read-write.

For each variant of the plan (one file system on one pair of disks): puts
a dm-log-writes target over the data disk with the log disk beside it,
makes the file system through it, starts the stowbridge daemon with its
spool there, sends the instances one C-STORE association at a time and,
right after each one storescu saw answered Success, inserts the mark
"acked-K" into the log (with "assocs" > 1, that many associations at
once). Then stops the daemon, unmounts and removes the
target (which logs what was still unflushed and the final super).

Writes WORK/guest-result.json: per variant, the instances acknowledged,
the disk's cache mode as the guest saw it, and timings.

usage: guest_record.py WORK/plan.json
"""
import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import time


def log(msg):
    print("guest: " + msg, flush=True)


def run(cmd, check=True, timeout=120):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError("%s exited %d: %s%s" % (
            " ".join(cmd), r.returncode, r.stdout[-2000:], r.stderr[-2000:]))
    return r


def read_sys(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mark(dm, text):
    run(["dmsetup", "message", dm, "0", "mark", text])


def echo_ok(port):
    r = run(["echoscu", "-to", "5", "-ta", "5", "-td", "5", "-aec",
             "STOWBRIDGE", "127.0.0.1", str(port)], check=False, timeout=30)
    return r.returncode == 0


def store(port, path, ts_flag):
    """One association, one C-STORE. True if storescu saw Success."""
    r = run(["storescu", "-v", ts_flag, "-to", "10", "-ta", "30", "-td",
             "60", "-aet", "POWERSCU", "-aec", "STOWBRIDGE", "127.0.0.1",
             str(port), path], check=False, timeout=120)
    out = r.stdout + r.stderr
    return r.returncode == 0 and "Received Store Response (Success)" in out


def record(plan, var, work):
    name = var["name"]
    data_dev, log_dev = var["data_dev"], var["log_dev"]
    dm = "power-" + name
    res = {"name": name, "acked": [], "refused": []}
    disk = os.path.basename(data_dev)
    res["write_cache"] = read_sys("/sys/block/%s/queue/write_cache" % disk)
    res["fua"] = read_sys("/sys/block/%s/queue/fua" % disk)
    sectors = run(["blockdev", "--getsz", data_dev]).stdout.strip()
    run(["dmsetup", "create", "--noudevsync", dm, "--table",
         "0 %s log-writes %s %s" % (sectors, data_dev, log_dev)])
    run(["dmsetup", "mknodes", dm], check=False)
    dev = "/dev/mapper/" + dm
    if not os.path.exists(dev):
        raise RuntimeError("no %s after dmsetup create" % dev)
    # Inode tables and journal written now, not by ext4lazyinit during
    # the test; no discards (replay would have to guess their effect).
    run(["mkfs.ext4", "-q", "-F", "-E",
         "nodiscard,lazy_itable_init=0,lazy_journal_init=0",
         *var["mkfs_args"], dev], timeout=300)
    mark(dm, "mkfs")
    mnt = "/run/power-mnt-" + name
    os.makedirs(mnt, exist_ok=True)
    run(["mount", "-t", "ext4", *var["mount_args"], dev, mnt])
    res["mount_options"] = [
        line.split()[3] for line in open("/proc/mounts")
        if line.split()[1] == mnt]
    spool = os.path.join(mnt, "spool")
    port = free_port()
    cfg = {
        "dicom": {"ae_title": "STOWBRIDGE", "port": port, "timeout_s": 30},
        "spool": dict(plan.get("spool_extra", {}), **var.get("spool", {}),
                      dir=spool, min_free_mb=0),
        "log": {"level": "info"},
        "admin": {"listen": ""},
    }
    cfg_path = os.path.join(work, "guest-%s.json" % name)
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)
    daemon_log = open(os.path.join(work, "guest-daemon-%s.log" % name), "wb")
    env = dict(os.environ)
    if plan.get("preload"):
        env["LD_PRELOAD"] = plan["preload"]  # the self-check only
    proc = subprocess.Popen([plan["stowbridge"], "run", "--config", cfg_path],
                            stdout=daemon_log, stderr=daemon_log, env=env)
    deadline = time.time() + 60
    while not echo_ok(port):
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError("the daemon did not start (see "
                               "guest-daemon-%s.log)" % name)
        time.sleep(0.1)
    mark(dm, "ready")
    t0 = time.time()

    def send(k):
        if store(port, plan["instances"][k - 1]["path"], plan["ts_flag"]):
            mark(dm, "acked-%d" % k)
            return k, True
        return k, False

    ks = range(1, var["count"] + 1)
    if var.get("assocs", 1) > 1:
        # Several associations at once: their commits share directory
        # fsyncs (the group commit); each mark still follows its own ack.
        with concurrent.futures.ThreadPoolExecutor(var["assocs"]) as pool:
            outcomes = list(pool.map(send, ks))
    else:
        outcomes = [send(k) for k in ks]
    for k, ok in sorted(outcomes):
        (res["acked"] if ok else res["refused"]).append(k)
    res["store_s"] = round(time.time() - t0, 2)
    proc.send_signal(signal.SIGTERM)
    res["daemon_exit"] = proc.wait(60)
    daemon_log.close()
    mark(dm, "stopped")
    run(["umount", mnt])
    res["status"] = run(["dmsetup", "status", dm]).stdout.strip()
    run(["dmsetup", "remove", "--noudevsync", dm])
    log("%s: %d acknowledged, %d refused, %.1f s, status %s" % (
        name, len(res["acked"]), len(res["refused"]), res["store_s"],
        res["status"]))
    return res


def main():
    plan_path = sys.argv[1]
    work = os.path.dirname(plan_path)
    with open(plan_path) as f:
        plan = json.load(f)
    out = {"variants": [], "kernel": os.uname().release}
    run(["ip", "link", "set", "lo", "up"], check=False)
    try:
        for var in plan["variants"]:
            out["variants"].append(record(plan, var, work))
    except Exception as e:  # reported to the host, which fails the test
        out["error"] = str(e)
        log("error: " + str(e))
    tmp = os.path.join(work, "guest-result.json.tmp")
    with open(tmp, "w") as f:
        json.dump(out, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, os.path.join(work, "guest-result.json"))
    return 0 if "error" not in out else 1


if __name__ == "__main__":
    sys.exit(main())
