# SPDX-License-Identifier: GPL-3.0-or-later
"""Boot images for the test VMs: one Debian 12 root file system, one initramfs per kernel.

Everything is built once and cached under $KMOD_TEST_CACHE/vm (outside the repository),
behind a file lock so that parallel test sessions never race. The cache key is a hash of
everything that goes into an image (package lists, guest scripts, kernel packages,
FORMAT), not of this file's text, so that editing helper code does not force a rebuild.

Layout of the cache:
  vm/base-<hash>/        debootstrap tree with pyelftools + zstandard (slowest step, ~1-2 min)
  vm/image-<hash>/       rootfs.img (ext4, both kernels' module trees), initrd-<release>.gz,
                         id_ed25519[.pub] (root's ssh key); .ready when complete
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import importlib.metadata
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import typing as t
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from kernels import CACHE, KERNELS, KernelTree, kernel_package, pristine_root  # noqa: E402

VM_CACHE = CACHE / "vm"
# Bump when the build logic changes in a way the hashed inputs below do not show.
FORMAT = 2
SUITE = "bookworm"
PACKAGES = ["python3", "openssh-server", "kmod", "iproute2", "procps",
            # systemd only for /lib/systemd/systemd-modules-load, which the guest's
            # init runs at every boot (persistent modules survive a reboot as with systemd).
            "systemd", "xz-utils", "zstd"]
# The managed node's runtime dependencies, pinned to the controller's versions.
PIP_PACKAGES = ["pyelftools", "zstandard"]
# Modules the initramfs needs to reach the root disk and the network (deps found by modprobe).
INITRD_MODULES = ["virtio_pci", "virtio_blk", "ext4", "virtio_net"]

# initramfs /init: load the disk/net drivers, mount the root, hand over to GUEST_INIT.
INITRD_INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in /modules/*.ko; do
    insmod "$m" 2>/dev/null || echo "initramfs: insmod $m failed"
done
n=0
while [ ! -b /dev/vda ]; do
    n=$((n + 1))
    if [ $n -gt 300 ]; then echo "initramfs: no /dev/vda"; poweroff -f; fi
    sleep 0.1
done
mount -t ext4 -o rw /dev/vda /newroot || { echo "initramfs: cannot mount /dev/vda"; poweroff -f; }
for d in proc sys dev; do mount --move /$d /newroot/$d; done
exec switch_root /newroot /sbin/kmod-vm-init
"""

# PID 1 of the guest: what systemd would do for a test host, in a fraction of the time
# (booting systemd under TCG costs far more; see docs/vm.md).
GUEST_INIT = """#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mkdir -p /dev/pts /dev/shm /run/sshd /run/lock
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
hostname kmod-vm
ip link set lo up
ip addr add 10.0.2.15/24 dev eth0
ip link set eth0 up
ip route add default via 10.0.2.2
# Load modules-load.d entries (and /etc/modules) as systemd-modules-load.service does.
/lib/systemd/systemd-modules-load || echo "kmod-vm-init: systemd-modules-load failed"
echo "kmod-vm-init: starting sshd"
# sshd as PID 1 also reaps orphans (its SIGCHLD handler waits for any child).
exec /usr/sbin/sshd -D -e
"""

SSHD_CONFIG = """PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
HostKey /etc/ssh/ssh_host_ed25519_key
AuthorizedKeysFile /root/.ssh/authorized_keys
"""


class VMImage(t.NamedTuple):
    """What qemu needs to boot one kernel, and the key to log in."""

    key: str
    release: str
    kernel: Path
    initrd: Path
    rootfs: Path
    ssh_key: Path


def _hash(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 or one-line format)."""
    for source in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for stanza in source.read_text().split("\n\n"):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
            if SUITE in fields.get("Suites", "").split() and "deb" in fields.get("Types", ""):
                return fields["URIs"].split()[0]
    lists = Path("/etc/apt/sources.list")
    if lists.exists():
        for line in lists.read_text().splitlines():
            words = line.split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                return words[1]
    return "http://deb.debian.org/debian"


def _pip_pins() -> list[str]:
    pins = []
    for name in PIP_PACKAGES:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:  # not on the controller: take the newest
            pins.append(name)
    return pins


@contextlib.contextmanager
def _locked() -> t.Iterator[None]:
    VM_CACHE.mkdir(parents=True, exist_ok=True)
    with open(VM_CACHE / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _run(cmd: list[str], **kwargs: t.Any) -> None:
    """Run a build step; on failure raise with its output (no stdin: CI has none)."""
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          check=False, **kwargs)
    if proc.returncode != 0:
        raise RuntimeError(f"VM image build step failed ({proc.returncode}): {' '.join(cmd)}\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def _discard(tree: Path) -> None:
    """Remove a half-built tree; a failed debootstrap may leave /proc or /sys mounted in it."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted(mounts, reverse=True):
        if mount.startswith(f"{tree}/"):
            subprocess.run(["umount", "-l", mount], stdin=subprocess.DEVNULL, capture_output=True,
                           check=False)
    shutil.rmtree(tree, ignore_errors=True)


def _base_dir() -> Path:
    return VM_CACHE / f"base-{_hash(FORMAT, SUITE, _mirror(), PACKAGES, _pip_pins())}"


def _base_tree(base: Path) -> None:
    """debootstrap tree with the Python dependencies (shared by image versions)."""
    if (base / ".ready").exists():
        return
    shutil.rmtree(base, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=".base-", dir=VM_CACHE))
    try:
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
              SUITE, str(tmp), _mirror()])
        # Compiled here: the first import of elftools in a fresh guest would take 5 s, not 2.
        _run([sys.executable, "-m", "pip", "install", "-q", "--only-binary=:all:",
              "--target", str(tmp / "usr/local/lib/python3.11/dist-packages"), *_pip_pins()])
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc",
                     "usr/share/man", "usr/share/locale"):
            for entry in (tmp / junk).glob("*"):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                elif entry.name != "lock":
                    entry.unlink()
        for key in (tmp / "etc/ssh").glob("ssh_host_*"):
            key.unlink()
    except BaseException:
        _discard(tmp)
        raise
    tmp.rename(base)
    (base / ".ready").touch()


def _initrd_modules(tree: KernelTree) -> list[Path]:
    """The module files INITRD_MODULES need, dependencies first, each once (modprobe's order)."""
    proc = subprocess.run(["modprobe", "-d", str(tree.root), "-S", tree.release, "-a",
                           "--show-depends", *INITRD_MODULES],
                          capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL)
    files: list[Path] = []
    for line in proc.stdout.splitlines():
        words = line.split()
        if words[:1] == ["insmod"] and Path(words[1]) not in files:
            files.append(Path(words[1]))
    return files


def _static_busybox() -> Path:
    """This machine's busybox, which must run without a libc in the initramfs."""
    busybox = Path(shutil.which("busybox") or "/bin/busybox")
    try:
        with open(busybox, "rb") as stream:
            dynamic = any(seg["p_type"] == "PT_INTERP" for seg in ELFFile(stream).iter_segments())
    except (OSError, ELFError) as exc:
        raise RuntimeError(f"no usable busybox ({exc}): apt-get install busybox-static") from exc
    if dynamic:
        raise RuntimeError(f"{busybox} is dynamically linked: apt-get install busybox-static")
    return busybox


def _build_initrd(tree: KernelTree, dest: Path) -> None:
    with tempfile.TemporaryDirectory(prefix=".initrd-", dir=VM_CACHE) as tmpdir:
        tmp = Path(tmpdir)
        for sub in ("bin", "modules", "dev"):
            (tmp / sub).mkdir()
        shutil.copy2(_static_busybox(), tmp / "bin/busybox")
        (tmp / "init").write_text(INITRD_INIT)
        (tmp / "init").chmod(0o755)
        os.mknod(tmp / "dev/console", 0o600 | 0o020000, os.makedev(5, 1))
        for number, path in enumerate(_initrd_modules(tree)):
            data = path.read_bytes()
            if path.suffix == ".xz":  # busybox insmod wants plain ELF
                data = lzma.decompress(data)
            name = path.name.split(".ko")[0]
            (tmp / "modules" / f"{number:02d}-{name}.ko").write_bytes(data)
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*"))
        cpio = subprocess.run(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"], cwd=tmp,
                              input="\n".join(files).encode(), capture_output=True, check=True)
        dest.write_bytes(gzip.compress(cpio.stdout, compresslevel=1))


def _build_image(base: Path, trees: list[KernelTree], dest: Path) -> None:
    """rootfs.img = base + both kernels' module trees + ssh keys + init; initrd per kernel."""
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kmod-vm-root",
          "-f", str(dest / "id_ed25519")])
    with tempfile.TemporaryDirectory(prefix=".rootfs-", dir=VM_CACHE) as tmpdir:
        root = Path(tmpdir) / "root"
        _run(["cp", "-a", str(base), str(root)])
        (root / ".ready").unlink()
        # Resolved because lib -> usr/lib on bookworm (merged /usr).
        moddirs = (root / "lib").resolve() / "modules"
        moddirs.mkdir(exist_ok=True)
        for tree in trees:
            _run(["cp", "-a", str(tree.moddir), str(moddirs)])
            for name in (f"config-{tree.release}", f"System.map-{tree.release}"):
                shutil.copy2(tree.root / "boot" / name, root / "boot" / name)
        ssh = root / "root/.ssh"
        ssh.mkdir(mode=0o700, exist_ok=True)
        shutil.copy2(dest / "id_ed25519.pub", ssh / "authorized_keys")
        (ssh / "authorized_keys").chmod(0o600)
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kmod-vm-host",
              "-f", str(root / "etc/ssh/ssh_host_ed25519_key")])
        (root / "etc/ssh/sshd_config.d/kmod-vm.conf").write_text(SSHD_CONFIG)
        (root / "etc/hostname").write_text("kmod-vm\n")
        (root / "etc/hosts").write_text("127.0.0.1 localhost\n127.0.1.1 kmod-vm\n")
        init = root / "sbin/kmod-vm-init"
        init.write_text(GUEST_INIT)
        init.chmod(0o755)
        used = int(subprocess.run(["du", "-sb", str(root)], capture_output=True, text=True,
                                  check=True).stdout.split()[0])
        # Room for tests that copy modules or write indexes (writes go to qemu's snapshot).
        size_mb = used * 13 // 10 // 2**20 + 768
        _run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(root),
              str(dest / "rootfs.img"), f"{size_mb}M"])
    for tree in trees:
        _build_initrd(tree, dest / f"initrd-{tree.release}.gz")


def _image_dir(base: Path) -> tuple[Path, list[KernelTree]]:
    trees = [pristine_root(key) for key in KERNELS]
    debs = [kernel_package(key).name for key in KERNELS]
    key = _hash(FORMAT, base.name, debs, INITRD_MODULES, INITRD_INIT, GUEST_INIT, SSHD_CONFIG)
    return VM_CACHE / f"image-{key}", trees


def _prune(keep: set[Path]) -> None:
    """Drop what a killed build left (under the lock nobody else is building) and
    versions nobody used for a day (a tree of another version may still be in use)."""
    stale = time.time() - 86400
    ours = (".base-", ".image-", ".rootfs-", ".initrd-", "base-", "image-")
    for entry in VM_CACHE.iterdir():
        if entry in keep or not entry.name.startswith(ours):
            continue
        ready = entry / ".ready"
        if entry.name.startswith(".") or not ready.exists() or ready.stat().st_mtime < stale:
            _discard(entry)


def build() -> Path:
    """Build (or find) the current image directory; safe to call from parallel sessions."""
    with _locked():
        base = _base_dir()
        dest, trees = _image_dir(base)
        if not (dest / ".ready").exists():
            _base_tree(base)
            shutil.rmtree(dest, ignore_errors=True)
            tmp = Path(tempfile.mkdtemp(prefix=".image-", dir=VM_CACHE))
            try:
                _build_image(base, trees, tmp)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            tmp.rename(dest)
        # .ready's mtime says when a version was last used (see _prune).
        for used in (base, dest):
            if used.exists():
                (used / ".ready").touch()
        _prune({base, dest})
        return dest


def image(key: str) -> VMImage:
    """The boot files for kernel `key` ("6.1" or "6.12"), built on first use."""
    if key not in KERNELS:
        raise ValueError(f"unknown kernel {key!r}; known: {', '.join(KERNELS)}")
    directory = build()
    tree = pristine_root(key)
    return VMImage(key, tree.release, tree.vmlinuz, directory / f"initrd-{tree.release}.gz",
                   directory / "rootfs.img", directory / "id_ed25519")
