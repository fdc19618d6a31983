#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Reads and replays the log of the kernel's dm-log-writes target.

The format (drivers/md/dm-log-writes.c, Documentation/admin-guide/
device-mapper/log-writes.rst), all little endian:

- sector 0 of the log device: the super, {u64 magic, u64 version,
  u64 nr_entries, u32 sectorsize}; sectorsize is the logical block size of
  the logged device, and the unit of every entry's sector and length;
- from byte sectorsize on, nr_entries entries, each one header block of
  sectorsize bytes, {u64 sector, u64 nr_sectors, u64 flags, u64 data_len}
  (a mark's text follows the 32 header bytes in the same block), then,
  unless it is a discard or a mark, nr_sectors blocks of the data written.

The target logs a write only once a later FLUSH covers it (or at once for
a FUA write): the log is in completion order, each FLUSH entry preceded by
the writes that had completed when the flush was issued. A mark goes to
the log at once, after every write flushed so far. The super's nr_entries
is rewritten after each FUA or mark entry and when the target is removed.

usage: logwrites.py LOG [--replay IMAGE [--upto N]]
  prints the entries (index, flags, sector, sectors, mark), or replays the
  first N entries (all by default) onto IMAGE.
"""
import os
import struct
import sys

FLUSH = 1 << 0
FUA = 1 << 1
DISCARD = 1 << 2
MARK = 1 << 3
METADATA = 1 << 4

MAGIC = 0x6A736677736872
VERSION = 1
SUPER = struct.Struct("<QQQI")
ENTRY = struct.Struct("<QQQQ")


class LogError(Exception):
    pass


class Entry:
    __slots__ = ("index", "sector", "nr_sectors", "flags", "data_len",
                 "offset", "mark")

    def __init__(self, index, sector, nr_sectors, flags, data_len, offset,
                 mark):
        self.index = index
        self.sector = sector
        self.nr_sectors = nr_sectors
        self.flags = flags
        self.data_len = data_len
        self.offset = offset  # byte offset of the data in the log
        self.mark = mark

    def flag_text(self):
        names = [(FLUSH, "flush"), (FUA, "fua"), (DISCARD, "discard"),
                 (MARK, "mark"), (METADATA, "meta")]
        return ",".join(n for f, n in names if self.flags & f) or "-"


class Log:
    """The entries of one log file, indexed once (data is read on replay)."""

    def __init__(self, path):
        self.path = path
        self.f = open(path, "rb")
        head = self.f.read(SUPER.size)
        if len(head) < SUPER.size:
            raise LogError("%s: shorter than the super" % path)
        magic, version, nr_entries, sectorsize = SUPER.unpack(head)
        if magic != MAGIC:
            raise LogError("%s: bad magic 0x%x" % (path, magic))
        if version != VERSION:
            raise LogError("%s: unknown version %d" % (path, version))
        if sectorsize < 512 or sectorsize & (sectorsize - 1):
            raise LogError("%s: bad sector size %d" % (path, sectorsize))
        self.sectorsize = sectorsize
        self.nr_entries = nr_entries
        self.entries = []
        size = os.fstat(self.f.fileno()).st_size
        pos = sectorsize
        for i in range(nr_entries):
            self.f.seek(pos)
            block = self.f.read(sectorsize)
            if len(block) < sectorsize:
                raise LogError("%s: entry %d past the end" % (path, i))
            sector, nr, flags, data_len = ENTRY.unpack_from(block)
            mark = None
            pos += sectorsize
            if flags & MARK:
                raw = block[ENTRY.size:ENTRY.size + data_len]
                mark = raw.split(b"\0", 1)[0].decode("ascii", "replace")
            elif not flags & DISCARD:
                if pos + nr * sectorsize > size:
                    raise LogError("%s: data of entry %d past the end" %
                                   (path, i))
            self.entries.append(Entry(i, sector, nr, flags, data_len,
                                      pos, mark))
            if not flags & (MARK | DISCARD):
                pos += nr * sectorsize

    def close(self):
        self.f.close()

    def marks(self):
        """{mark text: entry index} (the first entry of each text)."""
        out = {}
        for e in self.entries:
            if e.mark is not None:
                out.setdefault(e.mark, e.index)
        return out

    def apply(self, fd, start, stop):
        """Writes entries [start, stop) onto the image open at fd: the data
        of each write at its sector, zeros over each discard (the device
        may or may not zero; zeros are the harsher choice), nothing for
        marks and empty flushes."""
        ss = self.sectorsize
        for e in self.entries[start:stop]:
            if e.flags & MARK or e.nr_sectors == 0:
                continue
            length = e.nr_sectors * ss
            if e.flags & DISCARD:
                data = bytes(length)
            else:
                self.f.seek(e.offset)
                data = self.f.read(length)
                if len(data) != length:
                    raise LogError("entry %d: short data" % e.index)
            done = os.pwrite(fd, data, e.sector * ss)
            if done != length:
                raise LogError("entry %d: short pwrite" % e.index)


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip().split("usage: ")[-1], file=sys.stderr)
        return 2
    log = Log(argv[1])
    if "--replay" in argv:
        image = argv[argv.index("--replay") + 1]
        upto = len(log.entries)
        if "--upto" in argv:
            upto = int(argv[argv.index("--upto") + 1])
        fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            log.apply(fd, 0, upto)
        finally:
            os.close(fd)
        return 0
    print("sectorsize=%d entries=%d" % (log.sectorsize, log.nr_entries))
    for e in log.entries:
        print("%6d %-14s sector=%d sectors=%d%s" % (
            e.index, e.flag_text(), e.sector, e.nr_sectors,
            " mark=" + e.mark if e.mark is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
