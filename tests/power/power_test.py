#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The power-loss test of the spool (tests/power/README.md).

usage: power_test.py STOWBRIDGE WORK_DIR [--count N] [--variants a,b]
                     [--max-checkpoints N] [--keep] [--tcg]
                     [--expect-loss PRELOAD_LIB]

1. Boots a qemu guest (vm.py) with a Debian kernel that has dm-log-writes;
   in it (guest_record.py) the daemon receives N instances onto ext4 over
   a log-writes target, one mark "acked-K" in the log after each instance
   storescu saw acknowledged.
2. On the host, replays the log (logwrites.py) prefix by prefix onto a
   zeroed image: at every mark and at FLUSH/FUA entries after the daemon
   started (all of them, or an even sample of at most --max-checkpoints),
   a copy of the image is what the disk held had power been lost right
   there. Each copy gets e2fsck -fy, is mounted (loop), and the daemon's
   own start-up recovery runs on its spool (stowbridge run until READY=1,
   then SIGTERM). Then:
   (a) every instance acknowledged before that point is an entry
       <state>/<id>.dcm (incoming, active, deferred or failed) whose data
       set is byte for byte the one sent;
   (b) every entry in those states is one of the instances sent, whole:
       nothing torn, zero-filled or foreign would ever be uploaded.
--expect-loss runs the daemon in the guest with PRELOAD_LIB preloaded
(bench/nofsync.c: fsync does nothing) and inverts the verdict: exits 0
only if the checks found an acknowledged instance lost, which shows they
can fail.
Exits 0 if every checkpoint passed, 1 on any failure, 77 (skipped, with
the reason) only if qemu, a static busybox or the guest kernel cannot be
had, or the test does not run as root (loop mounts).
"""
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import logwrites  # noqa: E402
import vm  # noqa: E402

SKIP = 77
STATES = ("incoming", "active", "deferred", "failed")
DATA_MB = 64
LOG_MB = 1024  # sparse; mkfs writes about 10 MB of it, each instance ~3x

VARIANTS = {
    # ext4 as mkfs.ext4 makes it (journal, data=ordered).
    "journal": {"mkfs_args": ["-b", "4096"], "mount_args": []},
    # The same with four associations storing at once (group commit).
    "journal4": {"mkfs_args": ["-b", "4096"], "mount_args": [],
                 "assocs": 4},
    # ext4 without a journal, like this VM's own root file system.
    "nojournal": {"mkfs_args": ["-b", "4096", "-O", "^has_journal"],
                  "mount_args": []},
    # The same with the intake journal off (spool.journal_mb 0): every
    # instance committed file by file, the path bigger instances take.
    "nojournal_files": {"mkfs_args": ["-b", "4096", "-O", "^has_journal"],
                        "mount_args": [], "spool": {"journal_mb": 0}},
}


class Skip(Exception):
    pass


def run(cmd, timeout=120, **kw):
    return subprocess.run(cmd, capture_output=True, text=True,
                          timeout=timeout, **kw)


def dataset_of(data):
    """The bytes of a Part 10 file after its File Meta Information, or None
    if data is not a Part 10 file (no DICM, no (0002,0000) UL first)."""
    if len(data) < 144 or data[128:132] != b"DICM":
        return None
    tag, vr = data[132:136], data[136:138]
    if tag != b"\x02\x00\x00\x00" or vr != b"UL":
        return None
    group_len, = struct.unpack_from("<I", data, 140)
    start = 144 + group_len
    if start > len(data):
        return None
    return data[start:]


def make_instances(work, count):
    """Writes count generated CT instances of varied size; returns the
    manifest: [{path, sop, sha256 of the data set, size}]."""
    import it  # tests/integration/it.py: make_instance, pydicom
    src = os.path.join(work, "instances")
    os.makedirs(src, exist_ok=True)
    sides = [64, 200, 96, 320, 128, 48]  # 8 KB to 200 KB of pixels
    out = []
    for k in range(1, count + 1):
        path = os.path.join(src, "i%03d.dcm" % k)
        sop = it.make_instance(path, size=sides[k % len(sides)])
        with open(path, "rb") as f:
            ds = dataset_of(f.read())
        out.append({"path": path, "sop": sop, "size": len(ds),
                    "sha256": hashlib.sha256(ds).hexdigest()})
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spool_settings(stowbridge):
    """Spool settings for a 64 MiB scratch file system: an intake journal
    (spool.journal_mb, where the build has one) of 16 MiB rather than the
    default that would not fit. Builds without the key get nothing."""
    r = run([stowbridge, "sample-config"])
    if r.returncode == 0 and '"journal_mb"' in r.stdout:
        return {"journal_mb": 16}
    return {}


def recover(stowbridge, spool, work, extra=None):
    """Runs the daemon's start-up recovery on spool: stowbridge run until
    it sent READY=1 (spool opened and recovered, port bound), then
    SIGTERM. Returns (ok, the recovery log line or why not). A port taken
    by someone else between free_port() and the daemon's bind is tried
    again with another."""
    for _ in range(5):
        ok, text = recover_once(stowbridge, spool, work, extra or {})
        if ok or "Address already in use" not in text:
            return ok, text
    return ok, text


def recover_once(stowbridge, spool, work, extra):
    port = free_port()
    cfg = {"dicom": {"ae_title": "STOWBRIDGE", "port": port},
           "spool": dict(extra, dir=spool, min_free_mb=0),
           "log": {"level": "info"}, "admin": {"listen": ""}}
    cfg_path = os.path.join(work, "recover.json")
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)
    # A short path: sun_path holds 108 bytes, a build tree may be deeper.
    sock_dir = tempfile.mkdtemp(prefix="sb-power-")
    sock_path = os.path.join(sock_dir, "notify")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(sock_path)
    notify.settimeout(0.2)
    log_path = os.path.join(work, "recover.log")
    env = dict(os.environ, NOTIFY_SOCKET=sock_path)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([stowbridge, "run", "--config", cfg_path],
                                stdout=log, stderr=log, env=env)
        ready = False
        deadline = time.time() + 60
        try:
            while time.time() < deadline and proc.poll() is None:
                try:
                    if notify.recv(256).startswith(b"READY=1"):
                        ready = True
                        break
                except socket.timeout:
                    pass
        finally:
            notify.close()
            shutil.rmtree(sock_dir, ignore_errors=True)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    with open(log_path, errors="replace") as f:
        text = f.read()
    line = next((ln for ln in text.splitlines()
                 if "event=spool-recovered" in ln), None)
    if not ready or line is None:
        return False, "daemon did not recover the spool: " + text[-1500:]
    return True, line[line.index("event="):]


def scan_spool(spool, by_hash):
    """Reads every entry after recovery. Returns (intact {k: [state]},
    bad [description], other {dir: [names]})."""
    intact, bad, other = {}, [], {}
    for state in STATES:
        d = os.path.join(spool, state)
        names = sorted(os.listdir(d)) if os.path.isdir(d) else []
        for name in names:
            path = os.path.join(d, name)
            if not name.endswith(".dcm") or not os.path.isfile(path):
                other.setdefault(state, []).append(name)
                continue
            with open(path, "rb") as f:
                data = f.read()
            ds = dataset_of(data)
            k = None
            if ds is not None:
                k = by_hash.get(hashlib.sha256(ds).hexdigest())
            if k is None:
                zeros = len(data) - len(data.rstrip(b"\0"))
                bad.append("%s/%s: %d bytes, %s, %d trailing zero bytes" % (
                    state, name, len(data),
                    "not Part 10" if ds is None else
                    "data set matches no instance sent", zeros))
            else:
                intact.setdefault(k, []).append(state)
    for extra in ("tmp", "lost+found"):
        d = os.path.join(spool, extra)
        if os.path.isdir(d) and os.listdir(d):
            other[extra] = sorted(os.listdir(d))
    return intact, bad, other


class Checker:
    """Replays one variant's log and checks its checkpoints."""

    def __init__(self, args, variant, manifest, guest_res):
        self.args = args
        self.name = variant
        self.work = os.path.join(args["work"], "check-" + variant)
        shutil.rmtree(self.work, ignore_errors=True)
        os.makedirs(self.work)
        self.log = logwrites.Log(os.path.join(args["work"],
                                              "log-%s.img" % variant))
        self.data_img = os.path.join(args["work"], "data-%s.img" % variant)
        self.by_hash = {m["sha256"]: k for k, m in enumerate(manifest, 1)}
        self.guest_acked = set(guest_res["acked"])
        self.failures = []
        self.points = []

    def checkpoints(self):
        """Entry indices to stop after, all after the mark "ready": every
        acked/stopped mark and the last entry; the FLUSH/FUA entries; then,
        while --max-checkpoints leaves room, other entries (a prefix of
        the writes since the last flush: some unflushed writes reached the
        disk, in completion order). Each group sampled evenly to fit.
        Returns (indices, flush points, other points)."""
        marks = self.log.marks()
        if "ready" not in marks:
            raise RuntimeError("%s: no mark 'ready' in the log" % self.name)
        ready = marks["ready"]
        last = len(self.log.entries) - 1
        must = set(i for m, i in marks.items()
                   if m.startswith("acked-") or m == "stopped") | {last}
        flushes, others = [], []
        for e in self.log.entries[ready + 1:]:
            if e.index in must or e.flags & logwrites.MARK:
                continue
            if e.flags & (logwrites.FLUSH | logwrites.FUA):
                flushes.append(e.index)
            else:
                others.append(e.index)

        def sample(items, room):
            if len(items) <= room:
                return items
            step = len(items) / room if room else len(items) + 1
            return [items[int(j * step)] for j in range(room)]

        budget = self.args["max_checkpoints"]
        flushes = sample(flushes, max(budget - len(must), 0))
        others = sample(others, max(budget - len(must) - len(flushes), 0))
        pts = must | set(flushes) | set(others)
        return sorted(p for p in pts if p > ready), len(flushes), len(others)

    def acked_before(self, idx):
        """Instances whose acked-K mark is at or before entry idx."""
        out = set()
        for e in self.log.entries[:idx + 1]:
            if e.mark and e.mark.startswith("acked-"):
                out.add(int(e.mark[6:]))
        return out

    def fail(self, what):
        self.failures.append(what)
        print("FAIL: %s: %s" % (self.name, what), flush=True)

    def check_point(self, idx, image):
        # A new file per checkpoint: mount -o loop reuses a loop device
        # still attached to the same file (autoclear can lag behind
        # umount), whose cache would show the previous checkpoint.
        ck = os.path.join(self.work, "ck-%d.img" % idx)
        mnt = os.path.join(self.work, "mnt")
        os.makedirs(mnt, exist_ok=True)
        r = run(["cp", "--sparse=always", image, ck])
        if r.returncode != 0:
            raise RuntimeError("cp: " + r.stderr)
        acked = self.acked_before(idx)
        e = self.log.entries[idx]
        pt = {"entry": idx, "kind": e.mark or e.flag_text(),
              "acked": len(acked)}
        # What a boot does first (systemd-fsck: preen), recorded only;
        # then what an operator does when preen stops.
        pt["preen"] = run(["e2fsck", "-p", ck], timeout=300).returncode
        fsck = run(["e2fsck", "-fy", ck], timeout=300)
        pt["fsck"] = fsck.returncode
        fixes = [ln for ln in fsck.stdout.splitlines()
                 if ln and not ln.startswith(("Pass ", "e2fsck ")) and
                 "files (" not in ln]
        pt["fsck_said"] = fixes[:12]
        if fsck.returncode >= 4:
            self.fail("entry %d (%s): e2fsck -fy left errors (exit %d): %s"
                      % (idx, pt["kind"], fsck.returncode,
                         " | ".join(fixes[:8])))
            self.points.append(pt)
            os.unlink(ck)
            return
        r = run(["losetup", "--find", "--show", ck])
        if r.returncode != 0:
            raise RuntimeError("losetup: " + r.stderr.strip())
        loop = r.stdout.strip()
        r = run(["mount", "-t", "ext4", loop, mnt])
        if r.returncode != 0:
            self.fail("entry %d: mount failed: %s" % (idx, r.stderr.strip()))
            self.points.append(pt)
            run(["losetup", "-d", loop])
            os.unlink(ck)
            return
        try:
            spool = os.path.join(mnt, "spool")
            ok, line = recover(self.args["stowbridge"], spool, self.work,
                               self.args["spool_extra"])
            pt["recovery"] = line
            if not ok:
                self.fail("entry %d (%s): %s" % (idx, pt["kind"], line))
                return
            intact, bad, other = scan_spool(spool, self.by_hash)
            pt["entries"] = sum(len(v) for v in intact.values()) + len(bad)
            pt["other"] = other
            missing = sorted(acked - set(intact))
            if missing:
                lf = os.path.join(mnt, "lost+found")
                self.fail("entry %d (%s): acknowledged instance(s) %s not "
                          "in the spool after recovery (%d acknowledged, %d "
                          "intact entries; file system lost+found/ has %d "
                          "files; e2fsck exit %d: %s)" % (
                              idx, pt["kind"], missing, len(acked),
                              len(intact), len(os.listdir(lf))
                              if os.path.isdir(lf) else -1,
                              fsck.returncode, " | ".join(fixes[:6])))
            for b in bad:
                self.fail("entry %d (%s): torn or foreign entry %s" % (
                    idx, pt["kind"], b))
            dup = sorted(k for k, v in intact.items() if len(v) > 1)
            if dup:
                self.fail("entry %d: instance(s) %s spooled twice" % (
                    idx, dup))
            extra = sorted(set(intact) - acked)
            pt["unacked_intact"] = extra
        finally:
            r = run(["umount", mnt])
            if r.returncode != 0:
                raise RuntimeError("umount %s: %s" % (mnt, r.stderr))
            run(["losetup", "-d", loop])
            os.unlink(ck)
            self.points.append(pt)

    def run(self):
        pts, n_flush, n_other = self.checkpoints()
        base = os.path.join(self.work, "base.img")
        with open(base, "wb") as f:
            f.truncate(DATA_MB << 20)
        fd = os.open(base, os.O_RDWR | os.O_CLOEXEC)
        t0 = time.time()
        try:
            done = 0
            for idx in pts:
                self.log.apply(fd, done, idx + 1)
                done = idx + 1
                self.check_point(idx, base)
                pt = self.points[-1]
                print("%s: entry %5d %-12s acked=%-3d entries=%-3s "
                      "preen=%d fsck=%d %s"
                      % (self.name, idx, pt["kind"], pt["acked"],
                         pt.get("entries", "-"), pt["preen"], pt["fsck"],
                         pt.get("recovery", "")[len("event=spool-recovered "):]
                         .split(" ", 1)[-1]), flush=True)
            self.log.apply(fd, done, len(self.log.entries))
        finally:
            os.close(fd)
        # The whole log replayed must give the data disk exactly: proves
        # the replay (and that the log lost nothing).
        r = run(["cmp", base, self.data_img])
        if r.returncode != 0:
            self.fail("the whole log replayed differs from the data disk: "
                      + (r.stdout + r.stderr).strip())
        os.unlink(base)
        last = self.acked_before(len(self.log.entries) - 1)
        if last != self.guest_acked:
            self.fail("marks in the log (%d) differ from the acknowledged "
                      "instances (%d)" % (len(last), len(self.guest_acked)))
        preen_stops = sum(1 for p in self.points if p["preen"] >= 4)
        return {"variant": self.name, "entries": len(self.log.entries),
                "preen_stops": preen_stops,
                "checkpoints": len(self.points), "flush_points": n_flush,
                "other_points": n_other,
                "acked": len(self.guest_acked), "seconds":
                round(time.time() - t0, 1), "failures": self.failures,
                "points": self.points}


def parse_args(argv):
    if len(argv) < 3:
        raise SystemExit(__doc__)
    args = {"stowbridge": os.path.abspath(argv[1]),
            "work": os.path.abspath(argv[2]), "count": None,
            "variants": ["journal", "nojournal"], "max_checkpoints": 150,
            "keep": False, "tcg": False, "preload": None}
    rest = argv[3:]
    while rest:
        opt = rest.pop(0)
        if opt == "--count":
            args["count"] = int(rest.pop(0))
        elif opt == "--variants":
            args["variants"] = rest.pop(0).split(",")
        elif opt == "--max-checkpoints":
            args["max_checkpoints"] = int(rest.pop(0))
        elif opt == "--keep":
            args["keep"] = True
        elif opt == "--tcg":
            args["tcg"] = True
        elif opt == "--expect-loss":
            args["preload"] = os.path.abspath(rest.pop(0))
        else:
            raise SystemExit("unknown option " + opt)
    return args


def prepare(args):
    """Finds qemu, busybox and the kernel; raises Skip if one is missing."""
    if os.geteuid() != 0:
        raise Skip("needs root (loop mounts of the replayed images)")
    if vm.qemu_binary() is None:
        raise Skip("no qemu-system-x86_64 (Debian: qemu-system-x86)")
    busybox = vm.find_busybox()
    if busybox is None:
        raise Skip("no static busybox (Debian: busybox-static)")
    for tool in ("dmsetup", "mkfs.ext4", "e2fsck", "storescu", "echoscu"):
        if shutil.which(tool) is None and not os.path.exists(
                "/usr/sbin/" + tool) and not os.path.exists("/sbin/" + tool):
            raise RuntimeError("%s is missing (scripts/install-deps.sh)"
                               % tool)
    r = run([os.path.join(HERE, "guest_kernel.sh")], timeout=600)
    if r.returncode != 0:
        raise Skip("the guest kernel cannot be had: " + r.stderr.strip())
    return busybox, r.stdout.strip()


def main(argv):
    args = parse_args(argv)
    try:
        busybox, kernel_dir = prepare(args)
    except Skip as e:
        print("SKIP: " + str(e))
        return SKIP
    kvm = vm.kvm_usable() and not args["tcg"]
    args["spool_extra"] = spool_settings(args["stowbridge"])
    if args["count"] is None:
        args["count"] = 40 if kvm else 12
    work = args["work"]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    print("power: %s, %d instances per variant, variants %s, kernel %s, "
          "spool settings %s" % (
              "KVM" if kvm else "TCG (no usable KVM: fewer instances)",
              args["count"], ",".join(args["variants"]),
              os.path.basename(kernel_dir), args["spool_extra"]), flush=True)

    t0 = time.time()
    manifest = make_instances(work, args["count"])
    disks, plan_vars = [], []
    letters = "abcdefghijklmnop"
    for v in args["variants"]:
        data = os.path.join(work, "data-%s.img" % v)
        logi = os.path.join(work, "log-%s.img" % v)
        for path, mb in ((data, DATA_MB), (logi, LOG_MB)):
            with open(path, "wb") as f:
                f.truncate(mb << 20)
        plan_vars.append(dict(VARIANTS[v], name=v, count=args["count"],
                              data_dev="/dev/vd" + letters[len(disks)],
                              log_dev="/dev/vd" + letters[len(disks) + 1]))
        disks += [data, logi]
    plan = {"stowbridge": args["stowbridge"], "instances": manifest,
            "variants": plan_vars, "ts_flag": "-xe",
            "preload": args["preload"], "spool_extra": args["spool_extra"]}
    with open(os.path.join(work, "plan.json"), "w") as f:
        json.dump(plan, f, indent=1)
    with open(os.path.join(work, "guest.sh"), "w") as f:
        f.write("export PATH=/usr/sbin:/usr/bin:/sbin:/bin TMPDIR=/run "
                "HOME=/run LANG=C.UTF-8\n"
                "exec /usr/bin/python3 %s %s\n" % (
                    os.path.join(HERE, "guest_record.py"),
                    os.path.join(work, "plan.json")))
    initramfs = os.path.join(work, "initramfs")
    vm.build_initramfs(kernel_dir, busybox, work, initramfs)
    code, secs = vm.run_guest(kernel_dir, initramfs, work, disks, kvm,
                              timeout=600 if not kvm else 300)
    print("power: guest ran %.1f s (qemu exit %s)" % (secs, code), flush=True)
    res_path = os.path.join(work, "guest-result.json")
    if code is None or not os.path.exists(res_path):
        for name in ("console.log", "guest.log", "qemu.log"):
            p = os.path.join(work, name)
            if os.path.exists(p):
                with open(p, errors="replace") as f:
                    print("--- %s (tail)\n%s" % (name, f.read()[-3000:]))
        print("FAIL: the guest did not finish (timeout or crash)")
        return 1
    with open(res_path) as f:
        guest = json.load(f)
    with open(os.path.join(work, "guest.log"), errors="replace") as f:
        sys.stdout.write(f.read())
    if "error" in guest:
        print("FAIL: guest: " + guest["error"])
        return 1

    results, failed = [], False
    for gres in guest["variants"]:
        v = gres["name"]
        print("power: %s: %d acknowledged of %d sent, disk write cache %s, "
              "fua %s, mount %s" % (v, len(gres["acked"]), args["count"],
                                    gres["write_cache"], gres["fua"],
                                    ",".join(gres["mount_options"])),
              flush=True)
        if len(gres["acked"]) != args["count"]:
            print("FAIL: %s: the daemon refused instances %s" % (
                v, gres["refused"]))
            failed = True
        res = Checker(args, v, manifest, gres).run()
        results.append(res)
        failed = failed or bool(res["failures"])
    with open(os.path.join(work, "power-result.json"), "w") as f:
        json.dump({"guest": guest, "checks": results}, f, indent=1)
    total = 0
    for res in results:
        total += res["checkpoints"]
        print("power: %s: %d log entries, %d checkpoints checked (%d "
              "flush/FUA points, %d between flushes, the rest marks), %d "
              "failed, %.1f s" % (
                  res["variant"], res["entries"], res["checkpoints"],
                  res["flush_points"], res["other_points"],
                  len(res["failures"]), res["seconds"]))
        if res["preen_stops"]:
            print("power: %s: note: at %d checkpoints e2fsck -p (a boot's "
                  "fsck) stopped with UNEXPECTED INCONSISTENCY; e2fsck -fy "
                  "repaired them" % (res["variant"], res["preen_stops"]))
    print("power: %d checkpoints in %.1f s in all: %s" % (
        total, time.time() - t0, "FAILED" if failed else "all passed"))
    if args["preload"]:
        lost = sum(1 for res in results for f in res["failures"]
                   if "not in the spool" in f)
        print("power: self-check with %s preloaded: %s" % (
            os.path.basename(args["preload"]),
            "the checks found acknowledged instances lost at %d "
            "checkpoints, as they must" % lost if lost else
            "FAILED: the checks found no loss"))
        return 0 if lost else 1
    if not failed and not args["keep"]:
        for name in os.listdir(work):
            if name.endswith(".img"):
                os.unlink(os.path.join(work, name))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
