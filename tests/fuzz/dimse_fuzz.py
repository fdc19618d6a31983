#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""A mutation fuzzer for stowbridge's DIMSE side.

usage: dimse_fuzz.py BINARY [--cases N] [--seed S] [--keep DIR]

Starts BINARY (receive-only, a spool of its own) and plays N mutated DICOM
sessions against it with a raw peer (tests/integration/dimse_peer.py).
A session is a real one first - A-ASSOCIATE-RQ, a C-ECHO or one or two
C-STOREs (command and data set in P-DATA-TF PDUs of a random size), an
A-RELEASE-RQ - then mutated: bit flips, truncation at a PDU boundary or
inside a PDU, wrong PDU, PDV and element lengths, 200 presentation
contexts, duplicated context IDs, a data set on another context, command
and data flags swapped, A-RELEASE or A-ABORT in the middle of a data set,
and more (STRUCTURAL and BYTES below), one to three of them stacked.

After every case it checks that
  - the daemon is alive;
  - a real echoscu and a real storescu (DCMTK) still succeed;
  - every C-STORE-RSP 0000 the fuzzer saw (its own and storescu's) has
    its entry in the spool's incoming/, with that SOP Instance UID.
At the end the daemon must stop cleanly with exit status 0 (under ASan
with detect_leaks=1 a leak or an error report fails it).

Cases are reproducible from the seed: a failure prints the seed, the case
number and its mutations, and writes the bytes sent to DIR (or the work
directory, which is then kept).
"""
import argparse
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import dimse_peer as dp  # noqa: E402

UID_ROOT = "1.2.826.0.1.3680043.9.7156.8"


class Failed(Exception):
    pass


# ---------------------------------------------------------------------------
# Sessions: a list of units, serialized to PDUs
# ---------------------------------------------------------------------------
#
# A unit is one of
#   ("pdu", bytes)                       a whole PDU as is
#   ("pdv", pc_id, is_command, last, payload)
# Consecutive PDVs become one P-DATA-TF PDU each, unless a mutation packs
# several together.


def make_session(rng, n):
    """A valid session: an echo, or one or two stores."""
    kind = rng.choice(["echo", "store", "store", "store2"])
    frag = rng.choice([64, 200, 1000, 4000, 16372])
    max_pdu = rng.choice([0, 16384, 16384, 32768])
    contexts = [(1, dp.VERIFICATION, [dp.IMPLICIT]),
                (3, dp.CT_IMAGE, [dp.EXPLICIT, dp.IMPLICIT])]
    units = [("pdu", dp.associate_rq(contexts=contexts, max_pdu=max_pdu,
                                     calling="FUZZ"))]
    sops = []
    if kind == "echo":
        units += pdvs(1, dp.echo_rq(1), True, frag)
    else:
        for i in range(2 if kind == "store2" else 1):
            sop = "%s.%d.%d" % (UID_ROOT, n, i + 1)
            sops.append(sop)
            ds = dp.ct_dataset(sop, study=UID_ROOT + ".1",
                               pixels=rng.choice([64, 1024, 6000]))
            units += pdvs(3, dp.store_rq(i + 1, dp.CT_IMAGE, sop), True, frag)
            units += pdvs(3, dp.dataset_bytes(ds), False, frag)
    units.append(("pdu", dp.pdu(dp.RELEASE_RQ, b"\0\0\0\0")))
    return kind, units


def pdvs(pc_id, payload, is_command, frag):
    out = []
    for off in range(0, max(len(payload), 1), frag):
        chunk = payload[off:off + frag]
        out.append(("pdv", pc_id, is_command, off + frag >= len(payload),
                    chunk))
    return out


def serialize(units, pack=False):
    """The PDUs of @units (a PDV per P-DATA-TF, or, with @pack, runs of
    PDVs packed into one)."""
    out = []
    run = []

    def flush():
        if run:
            out.append(dp.pdu(dp.P_DATA, b"".join(run)))
            run.clear()

    for u in units:
        if u[0] == "pdu":
            flush()
            out.append(u[1])
        else:
            _, pc_id, is_command, last, payload = u
            run.append(dp.pdv(pc_id, payload, is_command, last))
            if not pack:
                flush()
    flush()
    return out


def pdv_indexes(units, data=None):
    return [i for i, u in enumerate(units)
            if u[0] == "pdv" and (data is None or u[2] != data)]


# ---------------------------------------------------------------------------
# Mutations. Structural ones change the units; byte ones change the PDUs.
# Each returns a short description.
# ---------------------------------------------------------------------------

def m_contexts_200(rng, s):
    ctx = [((2 * i + 1) & 0xff, dp.CT_IMAGE if i % 2 else dp.VERIFICATION,
            [dp.EXPLICIT, dp.IMPLICIT]) for i in range(200)]
    s.units[0] = ("pdu", dp.associate_rq(contexts=ctx, calling="FUZZ"))
    return "200 presentation contexts"


def m_duplicate_context(rng, s):
    ctx = [(1, dp.VERIFICATION, [dp.IMPLICIT]),
           (3, dp.CT_IMAGE, [dp.EXPLICIT]), (3, dp.CT_IMAGE, [dp.IMPLICIT])]
    if rng.random() < 0.5:
        ctx.append((1, dp.CT_IMAGE, [dp.EXPLICIT]))
    s.units[0] = ("pdu", dp.associate_rq(contexts=ctx, calling="FUZZ"))
    return "duplicated context IDs"


def m_other_context(rng, s):
    idx = pdv_indexes(s.units, data=True)
    if not idx:
        idx = pdv_indexes(s.units)
    pc = rng.choice([1, 5, 255, 0, 2])
    for i in rng.sample(idx, rng.randint(1, len(idx))):
        u = s.units[i]
        s.units[i] = (u[0], pc, u[2], u[3], u[4])
    return "PDVs on context %d" % pc


def m_flags_swapped(rng, s):
    idx = pdv_indexes(s.units)
    picked = idx if rng.random() < 0.3 else rng.sample(idx, 1)
    for i in picked:
        u = s.units[i]
        s.units[i] = (u[0], u[1], not u[2], u[3], u[4])
    return "command/data flag swapped in %d PDVs" % len(picked)


def m_last_flag(rng, s):
    idx = pdv_indexes(s.units)
    i = rng.choice(idx)
    u = s.units[i]
    s.units[i] = (u[0], u[1], u[2], not u[3], u[4])
    return "last-fragment flag flipped in PDV %d" % i


def insert_mid_data(rng, s, unit, what):
    idx = pdv_indexes(s.units, data=True) or pdv_indexes(s.units)
    i = rng.choice(idx)
    s.units.insert(i + rng.choice([0, 1]), unit)
    return "%s before unit %d" % (what, i)


def m_release_mid(rng, s):
    return insert_mid_data(rng, s, ("pdu", dp.pdu(dp.RELEASE_RQ,
                                                  b"\0\0\0\0")),
                           "A-RELEASE-RQ")


def m_abort_mid(rng, s):
    return insert_mid_data(rng, s, ("pdu", dp.raw_ab()), "A-ABORT")


def m_second_rq(rng, s):
    return insert_mid_data(rng, s, s.units[0], "a second A-ASSOCIATE-RQ")


def m_odd_pdu(rng, s):
    kind = rng.choice([0, 2, 3, 8, 9, 0x55, 0xff])
    body = os.urandom(rng.choice([0, 4, 10, 100]))
    return insert_mid_data(rng, s, ("pdu", dp.pdu(kind, body)),
                           "a PDU of type 0x%02x" % kind)


def m_empty_pdata(rng, s):
    body = rng.choice([b"", dp.pdv(3, b"", False, False)[:6],
                       b"\0\0\0\x02\x03\x00", b"\0\0\0\x00"])
    return insert_mid_data(rng, s, ("pdu", dp.pdu(dp.P_DATA, body)),
                           "an empty or short P-DATA-TF")


def m_command_twice(rng, s):
    idx = pdv_indexes(s.units, data=False)
    i = rng.choice(idx)
    s.units.insert(i, s.units[i])
    return "a command PDV twice"


def m_drop_units(rng, s):
    idx = pdv_indexes(s.units)
    drop = rng.sample(idx, rng.randint(1, min(3, len(idx))))
    s.units = [u for i, u in enumerate(s.units) if i not in drop]
    return "%d PDVs dropped" % len(drop)


def m_pdata_first(rng, s):
    idx = pdv_indexes(s.units)
    u = s.units[rng.choice(idx)]
    s.units.insert(0, u)
    return "a P-DATA-TF before the A-ASSOCIATE-RQ"


def m_uid_mismatch(rng, s):
    idx = pdv_indexes(s.units, data=False)
    for i in idx:
        u = s.units[i]
        payload = u[4].replace(UID_ROOT.encode(), b"1.2.826.0.1.3680043.9.71")
        s.units[i] = (u[0], u[1], u[2], u[3], payload)
    return "command UIDs differ from the data set's"


def m_tiny_pdu(rng, s):
    ctx = [(1, dp.VERIFICATION, [dp.IMPLICIT]),
           (3, dp.CT_IMAGE, [dp.EXPLICIT, dp.IMPLICIT])]
    size = rng.choice([1, 6, 12, 13, 14, 15, 20, 100])
    s.units[0] = ("pdu", dp.associate_rq(contexts=ctx, max_pdu=size,
                                         calling="FUZZ"))
    return "maximum PDU length %d" % size


def m_command_field(rng, s):
    """Another Command Field (0000,0100) in a command: C-MOVE, C-GET,
    N-ACTION, C-CANCEL, a response, nonsense."""
    field = rng.choice([0x0021, 0x0010, 0x0130, 0x0FFF, 0x8001, 0x8030,
                        0x0020, 0xFFFF, 0x0000])
    idx = pdv_indexes(s.units, data=False)
    i = rng.choice(idx)
    u = s.units[i]
    payload = bytearray(u[4])
    off = 0
    while off + 8 <= len(payload):
        group, elem, length = (int.from_bytes(payload[off:off + 2], "little"),
                               int.from_bytes(payload[off + 2:off + 4],
                                              "little"),
                               int.from_bytes(payload[off + 4:off + 8],
                                              "little"))
        if group == 0 and elem == 0x0100 and length == 2:
            payload[off + 8:off + 10] = field.to_bytes(2, "little")
            break
        off += 8 + length
    s.units[i] = (u[0], u[1], u[2], u[3], bytes(payload))
    return "command field 0x%04x in PDV %d" % (field, i)


def m_pack(rng, s):
    s.pack = True
    return "PDVs packed into one P-DATA-TF"


STRUCTURAL = [m_contexts_200, m_duplicate_context, m_other_context,
              m_flags_swapped, m_last_flag, m_release_mid, m_abort_mid,
              m_second_rq, m_odd_pdu, m_empty_pdata, m_command_twice,
              m_drop_units, m_pdata_first, m_uid_mismatch, m_tiny_pdu,
              m_command_field, m_pack]


def b_bitflip(rng, pdus):
    i = rng.randrange(len(pdus))
    if not pdus[i]:
        return "nothing to flip"
    b = bytearray(pdus[i])
    n = rng.choice([1, 1, 2, 4, 8])
    for _ in range(n):
        pos = rng.randrange(len(b))
        b[pos] ^= 1 << rng.randrange(8)
    pdus[i] = bytes(b)
    return "%d bit(s) flipped in PDU %d" % (n, i)


def b_pdu_length(rng, pdus):
    i = rng.randrange(len(pdus))
    if len(pdus[i]) < 6:
        return b_bitflip(rng, pdus)
    b = bytearray(pdus[i])
    real = len(b) - 6
    new = rng.choice([0, 1, 6, real - 1, real + 1, real + 1000, 0x7fffffff,
                      0xffffffff, rng.randrange(1 << 20)])
    new = max(0, min(new, 0xffffffff))
    b[2:6] = new.to_bytes(4, "big")
    pdus[i] = bytes(b)
    return "PDU %d length %d (really %d)" % (i, new, real)


def b_pdv_length(rng, pdus):
    idx = [i for i, p in enumerate(pdus) if p[0] == dp.P_DATA and len(p) >= 12]
    if not idx:
        return b_pdu_length(rng, pdus)
    i = rng.choice(idx)
    b = bytearray(pdus[i])
    real = int.from_bytes(b[6:10], "big")
    new = rng.choice([0, 1, 2, real - 1, real + 1, real + 64, 0xffffffff])
    new = max(0, min(new, 0xffffffff))
    b[6:10] = new.to_bytes(4, "big")
    pdus[i] = bytes(b)
    return "PDV length %d (really %d) in PDU %d" % (new, real, i)


def b_element_length(rng, pdus):
    """A command element's 4-byte length, in the first command PDV."""
    for i, p in enumerate(pdus):
        if p[0] == dp.P_DATA and len(p) >= 12 and p[11] & 1:
            b = bytearray(p)
            start = 12
            elems = []
            off = start
            while off + 8 <= len(b):
                length = int.from_bytes(b[off + 4:off + 8], "little")
                elems.append(off)
                off += 8 + length
            if not elems:
                break
            e = rng.choice(elems)
            new = rng.choice([0, 1, 3, 0xffff, 0xffffffff, 0x100])
            b[e + 4:e + 8] = new.to_bytes(4, "little")
            pdus[i] = bytes(b)
            return "command element at %d: length %d" % (e - start, new)
    return b_bitflip(rng, pdus)


def b_truncate_boundary(rng, pdus):
    if len(pdus) < 2:
        return b_bitflip(rng, pdus)
    k = rng.randrange(1, len(pdus))
    del pdus[k:]
    return "truncated after PDU %d" % (k - 1)


def b_truncate_inside(rng, pdus):
    i = rng.randrange(len(pdus))
    cut = rng.randrange(1, len(pdus[i])) if len(pdus[i]) > 1 else 0
    pdus[i] = pdus[i][:cut]
    del pdus[i + 1:]
    return "truncated inside PDU %d at byte %d" % (i, cut)


BYTES = [b_bitflip, b_pdu_length, b_pdv_length, b_element_length,
         b_truncate_boundary, b_truncate_inside]


def apply(rng, mutation, target):
    """@mutation on @target; one that finds nothing to work on (no PDV
    left, say) is skipped, deterministically."""
    try:
        return mutation(rng, target)
    except (ValueError, IndexError):
        return "%s: nothing to mutate" % mutation.__name__


class Case:
    def __init__(self, rng, n):
        self.kind, self.units = make_session(rng, n)
        self.pack = False
        self.what = []
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            if rng.random() < 0.5:
                self.what.append(apply(rng, rng.choice(STRUCTURAL), self))
        self.pdus = serialize(self.units, self.pack)
        while not self.what or rng.random() < 0.4:
            self.what.append(apply(rng, rng.choice(BYTES), self.pdus))
            if len(self.what) >= 3:
                break


# ---------------------------------------------------------------------------
# Running a case and reading the SCP's answers
# ---------------------------------------------------------------------------

def store_acks(data):
    """The SOP Instance UIDs of C-STORE-RSP 0000 in the bytes @data the
    SCP sent (PDUs, as far as they parse)."""
    acks = []
    off = 0
    cmd = b""
    while off + 6 <= len(data):
        kind = data[off]
        length = int.from_bytes(data[off + 2:off + 6], "big")
        body = data[off + 6:off + 6 + length]
        off += 6 + length
        if kind != dp.P_DATA:
            continue
        p = 0
        while p + 6 <= len(body):
            plen = int.from_bytes(body[p:p + 4], "big")
            ctrl = body[p + 5]
            value = body[p + 6:p + 4 + plen]
            p += 4 + plen
            if not ctrl & 1:
                continue
            cmd += value
            if ctrl & 2:
                fields = dp.parse_elements(cmd)
                cmd = b""
                if dp.field_us(fields, 0x0100) == dp.C_STORE_RSP and \
                        dp.field_us(fields, 0x0900) == 0:
                    acks.append(dp.field_uid(fields, 0x1000))
    return acks


def play(port, pdus, quiet_s=0.5):
    """Sends @pdus while reading what comes back; returns the bytes
    received. Stops when the SCP closes, or @quiet_s after the last send
    with nothing more coming."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    got = bytearray()
    done = threading.Event()

    def reader():
        sock.settimeout(0.2)
        last = time.monotonic()
        while True:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                if done.is_set() and time.monotonic() - last > quiet_s:
                    return
                continue
            except OSError:
                return
            if not chunk:
                return
            got.extend(chunk)
            last = time.monotonic()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        for p in pdus:
            sock.sendall(p)
    except OSError:
        pass
    done.set()
    t.join(15)
    sock.close()
    return bytes(got)


# ---------------------------------------------------------------------------
# The daemon and the checks
# ---------------------------------------------------------------------------

class Daemon:
    def __init__(self, binary, work):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.spool = os.path.join(work, "spool")
        self.config = os.path.join(work, "fuzz.json")
        with open(self.config, "w") as f:
            f.write('{"dicom": {"port": %d, "timeout_s": 3, '
                    '"max_associations": 16}, "spool": {"dir": "%s", '
                    '"min_free_mb": 0, "journal_mb": 8}, '
                    '"log": {"level": "warning"}}'
                    % (self.port, self.spool))
        self.log_path = os.path.join(work, "daemon.log")
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([binary, "run", "--config", self.config],
                                     stdout=self.log, stderr=self.log)
        self.seen = {}        # spool file -> SOP Instance UID
        deadline = time.time() + 30
        while time.time() < deadline:
            if echo(self.port):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise Failed("the daemon did not start: " + self.log_text()[-2000:])

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def spooled(self):
        """SOP Instance UIDs in incoming/ (files read once)."""
        import pydicom
        d = os.path.join(self.spool, "incoming")
        for name in os.listdir(d):
            path = os.path.join(d, name)
            if path not in self.seen:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
                self.seen[path] = str(ds.SOPInstanceUID)
        return set(self.seen.values())

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        finally:
            self.log.close()


def echo(port):
    r = subprocess.run(["echoscu", "-to", "5", "-ta", "10", "-td", "10",
                        "-aet", "FUZZECHO", "-aec", "STOWBRIDGE",
                        "127.0.0.1", str(port)], capture_output=True,
                       timeout=60)
    return r.returncode == 0


def storescu(port, path):
    """Stores @path under a new SOP Instance UID (+II); True when storescu
    got 0000."""
    r = subprocess.run(["storescu", "-v", "+II", "-to", "5", "-ta", "10",
                        "-td", "20", "-aet", "FUZZSTORE", "-aec",
                        "STOWBRIDGE", "127.0.0.1", str(port), path],
                       capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    return r.returncode == 0 and \
        "Received Store Response (Success)" in out


def make_file(work):
    import pydicom  # noqa: F401
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian
    path = os.path.join(work, "real.dcm")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = dp.CT_IMAGE
    meta.MediaStorageSOPInstanceUID = UID_ROOT + ".0.1"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(path, dp.ct_dataset(UID_ROOT + ".0.1",
                                         study=UID_ROOT + ".0",
                                         pixels=4096),
                     file_meta=meta, preamble=b"\0" * 128)
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    ds.save_as(path, write_like_original=False)
    return path


def run(args):
    work = tempfile.mkdtemp(prefix="stowbridge-fuzz-")
    keep = args.keep or work
    rng = random.Random(args.seed)
    print("dimse_fuzz: seed %d, %d cases, work %s" % (args.seed, args.cases,
                                                       work))
    real = make_file(work)
    d = Daemon(args.binary, work)
    acked = set()
    stores = 0
    start = time.monotonic()
    ok = False
    case = None
    n = 0
    try:
        for n in range(args.cases):
            case = Case(rng, n)
            got = play(d.port, case.pdus)
            acks = store_acks(got)
            acked.update(acks)
            if d.proc.poll() is not None:
                raise Failed("the daemon died (status %s)" % d.proc.returncode)
            if not echo(d.port):
                raise Failed("echoscu failed after the case")
            before = len(d.spooled())
            if not storescu(d.port, real):
                raise Failed("storescu failed after the case")
            stores += 1
            spooled = d.spooled()
            if len(spooled) <= before:
                raise Failed("storescu's 0000 has no new spool entry")
            missing = acked - spooled
            if missing:
                raise Failed("acknowledged (0000) but not in the spool: %s"
                             % sorted(missing))
            if args.verbose:
                print("case %d: %s %s -> %d bytes back, %d acks"
                      % (n, case.kind, "; ".join(case.what), len(got),
                         len(acks)))
        ok = True
    except Failed as e:
        print("FAIL case %d (seed %d): %s" % (n, args.seed, e))
        if case is not None:
            print("  session: %s; mutations: %s" % (case.kind,
                                                   "; ".join(case.what)))
            path = os.path.join(keep, "case-%d.bin" % n)
            with open(path, "wb") as f:
                f.write(b"".join(case.pdus))
            print("  bytes sent: %s" % path)
        print(d.log_text()[-3000:])
    finally:
        status = d.stop()
    took = time.monotonic() - start
    text = d.log_text()
    sanitizer = re.search(r"(LeakSanitizer|AddressSanitizer|runtime error)"
                          r".*", text)
    print("dimse_fuzz: %d cases in %.1f s, %d instances acknowledged by the "
          "fuzzer, %d by storescu, all in the spool; daemon exit status %s"
          % (n + 1 if ok else n, took, len(acked), stores, status))
    if sanitizer:
        print("FAIL: sanitizer report: %s" % sanitizer.group(0))
        print(text[sanitizer.start():sanitizer.start() + 4000])
        ok = False
    if status != 0:
        print("FAIL: the daemon did not stop cleanly (status %s)" % status)
        ok = False
    if ok and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    elif not ok:
        print("work directory kept: %s" % work)
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("binary")
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", help="directory for failing cases")
    ap.add_argument("--verbose", action="store_true")
    return run(ap.parse_args())


if __name__ == "__main__":
    sys.exit(main())
