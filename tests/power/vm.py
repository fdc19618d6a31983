#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The qemu guest of the power-loss test: a small initramfs (busybox and
the kernel modules it needs, loaded with insmod in dependency order) that
mounts the host's root file system read-only over 9p, /run as tmpfs and
the test's work directory read-write at its own path, then runs
WORK/guest.sh in that root and powers off.

Nothing here is installed on the host: the kernel comes unpacked from
Debian's package (guest_kernel.sh), the initramfs is written by this file.
"""
import os
import re
import shutil
import stat
import struct
import subprocess
import time

# The modules the guest loads (their dependencies are found in .modinfo):
# the virtio PCI transport, disks and 9p; ext4 with the crc32c its
# checksums need; device-mapper's log-writes target.
MODULES = ["virtio_pci", "virtio_blk", "9pnet_virtio", "9p", "crc32c_generic",
           "ext4", "dm_log_writes"]

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "power-init: loading modules"
while read m; do
    insmod /lib/modules/$m || echo "power-init: insmod $m failed"
done < /modules.order
o=trans=virtio,version=9p2000.L,msize=262144
if ! mount -t 9p -o $o,ro,cache=loose hostroot /host; then
    echo "power-init: cannot mount the host's root"
    poweroff -f
fi
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -t devtmpfs dev /host/dev
mount -t tmpfs -o mode=0755 tmpfs /host/run
mount -t 9p -o $o,cache=none work "/host@WORK@"
echo "power-init: running @WORK@/guest.sh"
chroot /host /bin/sh "@WORK@/guest.sh" > "/host@WORK@/guest.log" 2>&1
echo "power-init: guest.sh exited $?"
umount "/host@WORK@"
sync
poweroff -f
"""


class VmError(Exception):
    pass


def is_static(path):
    """True if the ELF file at path has no program interpreter."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:
            return False
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            p_type, = struct.unpack("<I", f.read(4))
            if p_type == 3:  # PT_INTERP
                return False
    return True


def find_busybox():
    for path in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.exists(path) and is_static(path):
            return path
    return None


def module_order(moddir, wanted):
    """The .ko paths (relative to moddir) of wanted and what they depend
    on, dependencies first, read from each module's "depends=" field."""
    index = {}
    for root, _, files in os.walk(moddir):
        for name in files:
            if name.endswith(".ko"):
                key = name[:-3].replace("-", "_")
                index[key] = os.path.relpath(os.path.join(root, name), moddir)
    order, seen = [], set()

    def visit(name):
        key = name.replace("-", "_")
        if key in seen:
            return
        seen.add(key)
        if key not in index:
            raise VmError("module %s not found under %s" % (name, moddir))
        with open(os.path.join(moddir, index[key]), "rb") as f:
            m = re.search(rb"depends=([^\0]*)\0", f.read())
        for dep in (m.group(1).decode().split(",") if m else []):
            if dep:
                visit(dep)
        order.append(index[key])

    for name in wanted:
        visit(name)
    return order


class Cpio:
    """A newc ("070701") archive, as the kernel unpacks an initramfs."""

    def __init__(self):
        self.out = bytearray()
        self.ino = 1

    def _add(self, name, mode, data=b"", rdev=(0, 0)):
        name_b = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0],
                  rdev[1], len(name_b), 0]
        self.ino += 1
        self.out += b"070701" + b"".join(b"%08X" % v for v in fields)
        self.out += name_b
        self.out += b"\0" * (-len(self.out) % 4)
        self.out += data
        self.out += b"\0" * (-len(self.out) % 4)

    def dir(self, name):
        self._add(name, stat.S_IFDIR | 0o755)

    def file(self, name, data, mode=0o644):
        self._add(name, stat.S_IFREG | mode, data)

    def chardev(self, name, major, minor):
        self._add(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self):
        self._add("TRAILER!!!", 0)
        return bytes(self.out)


def build_initramfs(kernel_dir, busybox, work, path):
    """Writes the initramfs for a guest whose work directory is work."""
    mods = os.path.join(kernel_dir, "lib", "modules")
    versions = os.listdir(mods)
    if len(versions) != 1:
        raise VmError("expected one kernel under %s, found %s" %
                      (mods, versions))
    moddir = os.path.join(mods, versions[0])
    order = module_order(moddir, MODULES)
    c = Cpio()
    for d in ("bin", "dev", "proc", "sys", "host", "lib", "lib/modules"):
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    with open(busybox, "rb") as f:
        c.file("bin/busybox", f.read(), 0o755)
    names = []
    for rel in order:
        flat = os.path.basename(rel)
        names.append(flat)
        with open(os.path.join(moddir, rel), "rb") as f:
            c.file("lib/modules/" + flat, f.read())
    c.file("modules.order", ("\n".join(names) + "\n").encode())
    c.file("init", INIT.replace("@WORK@", work).encode(), 0o755)
    with open(path, "wb") as f:
        f.write(c.finish())
    return names


def kernel_image(kernel_dir):
    boot = os.path.join(kernel_dir, "boot")
    for name in sorted(os.listdir(boot)):
        if name.startswith("vmlinuz-"):
            return os.path.join(boot, name)
    raise VmError("no vmlinuz under " + boot)


def qemu_binary():
    return shutil.which("qemu-system-x86_64")


def kvm_usable():
    """True if qemu can run a stock kernel under KVM: /dev/kvm opens and
    the CPU has hardware virtualization (vmx or svm). A /dev/kvm without
    either (kvm-pvm, this workplace's nested VMs) runs only kernels built
    as PVM guests; a stock kernel hangs right after its real-mode setup."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    try:
        with open("/proc/cpuinfo") as f:
            flags = set()
            for line in f:
                if line.startswith("flags"):
                    flags.update(line.split(":", 1)[1].split())
    except OSError:
        return False
    return bool(flags & {"vmx", "svm"})


def run_guest(kernel_dir, initramfs, work, disks, kvm, timeout, memory_mb=1024):
    """Boots the guest with disks (raw image paths, /dev/vda, vdb, ... in
    order) and waits for it to power off. Returns (exit code, seconds);
    the console goes to WORK/console.log."""
    cmd = [qemu_binary(), "-nodefaults", "-no-user-config", "-no-reboot",
           "-m", str(memory_mb), "-smp", "2", "-display", "none",
           "-serial", "file:" + os.path.join(work, "console.log"),
           "-kernel", kernel_image(kernel_dir), "-initrd", initramfs,
           "-append", "console=ttyS0 panic=-1 quiet",
           "-fsdev", "local,id=hostroot,path=/,security_model=none,"
           "readonly=on,multidevs=remap",
           "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
           "-fsdev", "local,id=work,path=%s,security_model=none" % work,
           "-device", "virtio-9p-pci,fsdev=work,mount_tag=work"]
    if kvm:
        cmd += ["-accel", "kvm", "-cpu", "host"]
    else:
        cmd += ["-accel", "tcg"]
    for i, disk in enumerate(disks):
        # cache=unsafe: the host's page cache holds the images and the
        # guest's flushes stop at qemu; the guest still sees a volatile
        # write cache and flushes (what the log records).
        cmd += ["-drive", "file=%s,if=none,id=d%d,format=raw,cache=unsafe"
                % (disk, i), "-device", "virtio-blk-pci,drive=d%d" % i]
    t0 = time.time()
    with open(os.path.join(work, "qemu.log"), "wb") as out:
        try:
            r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out,
                               stderr=subprocess.STDOUT, timeout=timeout)
            code = r.returncode
        except subprocess.TimeoutExpired:
            code = None
    return code, time.time() - t0
