#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""How the ledger's schema was chosen (ledger/README.md, "Schema"): builds
the same N deliveries into one SQLite file per candidate schema and prints
the bytes per row of each. Run on demand, never in CI:

    nice -n 19 python3 bench/ledger_schema.py [ROWS] [DIR] [LETTERS]

(LETTERS, e.g. "EF", runs only those schemas.)

ROWS (default 1000000) deliveries are drawn from two distributions:
  typical - the instance mix of a busy site: 60 % of the studies are CT/MR
            (100-1500 instances in 3-8 series), 40 % CR/DX/US (1-10
            instances, 1-2 series); so most instances share their study and
            series with hundreds of others;
  worst   - every instance is its own study and series (the worst case for
            interning).
UIDs have the shapes real modalities use (an organisation root followed by
dotted numbers, 45-64 characters; a fifth of them 2.25.<UUID>).
"""
import os
import random
import sqlite3
import sys
import time

ROWS = int(sys.argv[1]) if len(sys.argv) > 1 else 1000000
DIR = sys.argv[2] if len(sys.argv) > 2 else "/tmp"
rng = random.Random(12)

CLASSES = ["1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4",
           "1.2.840.10008.5.1.4.1.1.1.1", "1.2.840.10008.5.1.4.1.1.6.1",
           "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.1"]
AES = ["CT_SCANNER_1", "MR_SCANNER_2", "DX_ROOM_3", "US_CART_4", "PACS"]
DESTS = ["https://ws-dicom.dicom.azurehealthcareapis.com/v2",
         "https://healthcare.googleapis.com/v1/projects/p/locations/eu/"
         "datasets/d/dicomStores/s/dicomWeb"]
ROOTS = ["1.2.840.113619.2.55.3.", "1.3.12.2.1107.5.1.4.",
         "1.2.826.0.1.3680043.8.498.", "1.2.392.200036.9116.2.6.1.48."]


def new_uid():
    if rng.random() < 0.2:
        return "2.25.%d" % rng.getrandbits(128)
    uid = rng.choice(ROOTS) + "%d.%d.%d" % (
        rng.randrange(10**8, 10**10), rng.randrange(1000),
        rng.randrange(10**13, 10**14))
    return uid[:64]


def sub_uid(parent, n):
    uid = "%s.%d" % (parent, n)
    return uid if len(uid) <= 64 else new_uid()


def deliveries(kind):
    """Yields (sop, cls, study, series, ae, arrived_ms, delivered_ms,
    bytes, dest, outcome), delivery times spread like 1 million a day."""
    t0 = 1_760_000_000_000
    i = 0
    while True:
        study = new_uid()
        if kind == "worst":
            layout = [1]
        elif rng.random() < 0.6:
            layout = [rng.randrange(30, 300) for _ in range(rng.randrange(3, 9))]
        else:
            layout = [rng.randrange(1, 6) for _ in range(rng.randrange(1, 3))]
        cls = rng.choice(CLASSES)
        ae = rng.choice(AES)
        dest = DESTS[0]
        for s, n in enumerate(layout):
            series = sub_uid(study, s + 1)
            for k in range(n):
                if i >= ROWS:
                    return
                delivered = t0 + i * 86
                yield (sub_uid(series, k + 1), cls, study, series, ae,
                       delivered - rng.randrange(50, 5000), delivered,
                       rng.randrange(100_000, 600_000), dest, 1)
                i += 1


def pack(uid):
    """Two characters per byte ('0'-'9' -> 0-9, '.' -> 10, pad 15), as
    ledger/uid.c does; anything else stays text."""
    if not uid or len(uid) > 64 or any(c not in "0123456789." for c in uid):
        return uid
    nib = [10 if c == "." else ord(c) - 48 for c in uid]
    if len(nib) % 2:
        nib.append(15)
    return bytes(nib[j] << 4 | nib[j + 1] for j in range(0, len(nib), 2))


def fnv32(s):
    h = 0x811C9DC5
    for b in s.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def key64(s):
    """ledger/uid.c's key: hash of the UID without its last component in
    the high half, of the whole UID in the low half."""
    return fnv32(s.rpartition(".")[0]) * (1 << 32) + (fnv32(s) & 0xFFFFFFFF)


INTERN = """
CREATE TABLE name(id INTEGER PRIMARY KEY, kind INTEGER, value TEXT,
                  UNIQUE(kind, value));
CREATE TABLE study(id INTEGER PRIMARY KEY, uid UNIQUE);
CREATE TABLE series(id INTEGER PRIMARY KEY, study_id INTEGER, uid,
                    UNIQUE(study_id, uid));
"""

SCHEMAS = {
    "A flat text, indexes on SOP, study, time": """
CREATE TABLE delivery(id INTEGER PRIMARY KEY, sop TEXT, cls TEXT,
  study TEXT, series TEXT, ae TEXT, arrived INTEGER, delivered INTEGER,
  bytes INTEGER, dest TEXT, outcome INTEGER);
CREATE INDEX d_sop ON delivery(sop);
CREATE INDEX d_study ON delivery(study);
CREATE INDEX d_time ON delivery(delivered);""",
    "B interned, text SOP index, time index": INTERN + """
CREATE TABLE delivery(id INTEGER PRIMARY KEY, sop TEXT, series_id INTEGER,
  cls INTEGER, ae INTEGER, dest INTEGER, arrived INTEGER, delivered INTEGER,
  bytes INTEGER, outcome INTEGER);
CREATE INDEX d_sop ON delivery(sop);
CREATE INDEX d_series ON delivery(series_id);
CREATE INDEX d_time ON delivery(delivered);""",
    "C interned, WITHOUT ROWID keyed by packed SOP": INTERN + """
CREATE TABLE delivery(sop BLOB, delivered INTEGER, series_id INTEGER,
  cls INTEGER, ae INTEGER, dest INTEGER, wait INTEGER, bytes INTEGER,
  outcome INTEGER, PRIMARY KEY(sop, delivered)) WITHOUT ROWID;
CREATE INDEX d_series ON delivery(series_id);
CREATE INDEX d_time ON delivery(delivered);""",
    "D interned, packed SOP, 32-bit hash index, time index": INTERN + """
CREATE TABLE delivery(id INTEGER PRIMARY KEY, hash INTEGER, sop BLOB,
  series_id INTEGER, cls INTEGER, ae INTEGER, dest INTEGER,
  arrived INTEGER, delivered INTEGER, bytes INTEGER, outcome INTEGER);
CREATE INDEX d_sop ON delivery(hash);
CREATE INDEX d_series ON delivery(series_id);
CREATE INDEX d_time ON delivery(delivered);""",
    "E = D with the time as the row key (no time index)": INTERN + """
CREATE TABLE delivery(id INTEGER PRIMARY KEY, hash INTEGER, sop BLOB,
  series_id INTEGER, cls INTEGER, ae INTEGER, dest INTEGER,
  wait INTEGER, bytes INTEGER, outcome INTEGER);
CREATE INDEX d_sop ON delivery(hash);
CREATE INDEX d_series ON delivery(series_id);""",
    "G = E with the 64-bit series-clustered key (chosen)": INTERN + """
CREATE TABLE delivery(id INTEGER PRIMARY KEY, key INTEGER, sop BLOB,
  series_id INTEGER, cls INTEGER, ae INTEGER, dest INTEGER,
  wait INTEGER, bytes INTEGER, outcome INTEGER);
CREATE INDEX d_sop ON delivery(key);
CREATE INDEX d_series ON delivery(series_id);""",
    "F = E with the packed SOP UID indexed (no hash)": INTERN + """
CREATE TABLE delivery(id INTEGER PRIMARY KEY, sop BLOB,
  series_id INTEGER, cls INTEGER, ae INTEGER, dest INTEGER,
  wait INTEGER, bytes INTEGER, outcome INTEGER);
CREATE INDEX d_sop ON delivery(sop);
CREATE INDEX d_series ON delivery(series_id);""",
}


def intern_fn(db):
    cache = {}

    def get(table, key, sql_sel, sql_ins, params):
        if key in cache:
            return cache[key]
        row = db.execute(sql_sel, params).fetchone()
        if row is None:
            row = (db.execute(sql_ins, params).lastrowid,)
        cache[key] = row[0]
        return row[0]

    def name(kind, value):
        return get("name", ("n", kind, value),
                   "SELECT id FROM name WHERE kind=? AND value=?",
                   "INSERT INTO name(kind, value) VALUES(?, ?)", (kind, value))

    def series(study, uid):
        st = get("study", ("st", study), "SELECT id FROM study WHERE uid=?",
                 "INSERT INTO study(uid) VALUES(?)", (pack(study),))
        return get("series", ("se", st, uid),
                   "SELECT id FROM series WHERE study_id=? AND uid=?",
                   "INSERT INTO series(study_id, uid) VALUES(?, ?)",
                   (st, pack(uid)))
    return name, series


def row_for(label, r, name, series, seq):
    sop, cls, study, se, ae, arr, dlv, size, dest, out = r
    if label.startswith("A"):
        return (sop, cls, study, se, ae, arr, dlv, size, dest, out)
    ids = (series(study, se), name(1, cls), name(2, ae), name(3, dest))
    if label.startswith("B"):
        return (sop,) + ids + (arr, dlv, size, out)
    if label.startswith("C"):
        return (pack(sop), dlv) + ids + (dlv - arr, size, out)
    if label.startswith("D"):
        return (fnv32(sop), pack(sop)) + ids + (arr, dlv, size, out)
    if label.startswith("F"):
        return ((dlv << 12) | seq, pack(sop)) + ids + (dlv - arr, size, out)
    if label.startswith("G"):
        return ((dlv << 12) | seq, key64(sop), pack(sop)) + ids + (
            dlv - arr, size, out)
    return ((dlv << 12) | seq, fnv32(sop), pack(sop)) + ids + (dlv - arr,
                                                               size, out)


def build(label, kind):
    path = os.path.join(DIR, "ledger-schema-%d.db" % os.getpid())
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    db.executescript(SCHEMAS[label])
    name, series = intern_fn(db)
    cols = db.execute("PRAGMA table_info(delivery)").fetchall()
    sql = "INSERT INTO delivery VALUES(%s)" % ",".join("?" * len(cols))
    if label.startswith("A") or label.startswith("B") or \
            label.startswith("D"):
        sql = "INSERT INTO delivery VALUES(NULL,%s)" % ",".join(
            "?" * (len(cols) - 1))
    start = time.monotonic()
    batch = []
    for i, r in enumerate(deliveries(kind)):
        batch.append(row_for(label, r, name, series, i % 4096))
        if len(batch) == 10000:
            db.executemany(sql, batch)
            db.commit()
            batch = []
    db.executemany(sql, batch)
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    elapsed = time.monotonic() - start
    db.close()
    size = os.path.getsize(path)
    os.unlink(path)
    return size, elapsed


def main():
    print("%d rows per file; bytes per row (file size / rows)" % ROWS)
    for kind in ("typical", "worst"):
        for label in [l for l in SCHEMAS
                      if len(sys.argv) <= 3 or l[0] in sys.argv[3]]:
            size, elapsed = build(label, kind)
            print("%-8s %-55s %6.1f B/row  %5.2f GB at 30 M  (%.0f s)" % (
                kind, label, size / ROWS, size / ROWS * 30e6 / 1e9,
                elapsed), flush=True)


if __name__ == "__main__":
    main()
