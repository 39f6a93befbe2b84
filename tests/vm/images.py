# SPDX-License-Identifier: GPL-3.0-or-later
"""Boot images for the test VMs: a Debian root file system per guest, an initramfs per kernel.

Guests (GUESTS): Debian 12 booting Debian 12's 6.1 and 6.12 kernels (the controller's
pyelftools/zstandard from PyPI), Debian 13 booting trixie's own 6.12 kernel (kmod 34,
Python 3.13) and Debian 11 booting bullseye's 5.10 kernel (kmod 28, Python 3.9), both
with the suite's python3-pyelftools. Packages of other suites come through a second
sources list naming the suite (tests/kmod34.py suite_apt); this machine's apt is untouched.

Everything is built once and cached under $KMOD_TEST_CACHE/vm (outside the repository),
behind a file lock so that parallel test sessions never race. The cache key is a hash of
everything that goes into an image (package lists, guest scripts, kernel packages,
FORMAT), not of this file's text, so that editing helper code does not force a rebuild.

Layout of the cache:
  vm/base-<hash>/        debootstrap tree with pyelftools (+ zstandard) (slowest step, ~1-2 min)
  vm/image-<hash>/       rootfs.img (ext4, the guest's kernels' module trees), initrd-<release>.gz,
                         id_ed25519[.pub] (root's ssh key); .ready when complete
  vm/apt-bullseye/       bullseye's package lists and kernel .deb
  vm/roots/<release>/    bullseye's kernel unpacked (indexed by this machine's depmod, for
                         the initramfs; the image gets the guest's own depmod's indexes)
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
import kmod34  # noqa: E402
from kernels import CACHE, KERNELS, KernelTree, _locked as _cache_locked, kernel_package, pristine_root  # noqa: E402

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


class Guest(t.NamedTuple):
    """One root file system and the kernels (VM keys) that boot it."""

    suite: str
    packages: tuple[str, ...]
    # pyelftools/zstandard from PyPI at the controller's versions (else the suite's package)
    pip: bool
    kernels: tuple[str, ...]


# The distro's own kmod and Python are what the new guests test, so pyelftools comes from
# the distro too (bullseye's python3-pyelftools is 0.27, the oldest supported).
GUESTS = {
    "bookworm": Guest(SUITE, tuple(PACKAGES), True, tuple(KERNELS)),
    "trixie": Guest("trixie", (*PACKAGES, "python3-pyelftools"), False, ("trixie",)),
    "bullseye": Guest("bullseye", (*PACKAGES, "python3-pyelftools"), False, ("bullseye",)),
}
# Kernels of other suites: VM key -> (suite, release series of its linux-image-amd64).
SUITE_KERNELS = {"trixie": ("trixie", r"6\.12"), "bullseye": ("bullseye", r"5\.10")}

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


def _unmount(tree: Path) -> None:
    """Unmount what debootstrap left mounted in tree: a failed one, and a successful one of
    trixie (its /proc; copying the tree would then copy /proc/kcore and fill the disk)."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted(mounts, reverse=True):
        if mount.startswith(f"{tree}/"):
            subprocess.run(["umount", "-l", mount], stdin=subprocess.DEVNULL, capture_output=True,
                           check=False)


def _discard(tree: Path) -> None:
    """Remove a half-built tree."""
    _unmount(tree)
    shutil.rmtree(tree, ignore_errors=True)


def _base_dir(guest: Guest) -> Path:
    if guest.pip:  # the key Debian 12's base always had (its cached tree stays valid)
        return VM_CACHE / f"base-{_hash(FORMAT, guest.suite, _mirror(), list(guest.packages), _pip_pins())}"
    return VM_CACHE / f"base-{_hash(FORMAT, guest.suite, _mirror(), list(guest.packages))}"


def _base_tree(guest: Guest, base: Path) -> None:
    """debootstrap tree with the Python dependencies (shared by image versions)."""
    if (base / ".ready").exists():
        return
    shutil.rmtree(base, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=".base-", dir=VM_CACHE))
    try:
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(guest.packages)}",
              guest.suite, str(tmp), _mirror()])
        _unmount(tmp)
        if guest.pip:
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


def _build_image(guest: Guest, base: Path, trees: list[KernelTree], dest: Path) -> None:
    """rootfs.img = base + the kernels' module trees + ssh keys + init; initrd per kernel."""
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kmod-vm-root",
          "-f", str(dest / "id_ed25519")])
    with tempfile.TemporaryDirectory(prefix=".rootfs-", dir=VM_CACHE) as tmpdir:
        root = Path(tmpdir) / "root"
        _unmount(base)  # a base built before _unmount existed
        _run(["cp", "-a", "--one-file-system", str(base), str(root)])
        (root / ".ready").unlink()
        # Resolved because lib -> usr/lib on merged-/usr systems (bookworm, trixie).
        moddirs = (root / "lib").resolve() / "modules"
        moddirs.mkdir(exist_ok=True)
        for tree in trees:
            _run(["cp", "-a", str(tree.moddir), str(moddirs)])
            if not guest.pip:
                # The guest's own kmod writes the indexes the tests compare with (kmod 28/34).
                _run(["chroot", str(root), "depmod", tree.release])
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


def _unpacked(deb: Path) -> KernelTree:
    """A kernel package of another suite unpacked under the cache, indexed by this machine's
    depmod (enough to pick the initramfs modules; the image's indexes are the guest's)."""
    release = re.sub(r"^linux-image-(.*?)(-unsigned)?_.*$", r"\1", deb.name)
    root = VM_CACHE / "roots" / release
    with _cache_locked(f"vm-root-{release}"):
        if not (root / ".ready").exists():
            shutil.rmtree(root, ignore_errors=True)
            tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=VM_CACHE))
            try:
                _run(["dpkg", "-x", str(deb), str(tmp)])
                _run(["depmod", "-b", str(tmp), release])
                root.parent.mkdir(parents=True, exist_ok=True)
                tmp.rename(root)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            (root / ".ready").touch()
    return KernelTree(deb.name.split("_")[0], root, release)


def kernel(key: str) -> tuple[KernelTree, Path]:
    """The unpacked tree and .deb of the kernel that VM key boots."""
    if key in KERNELS:
        return pristine_root(key), kernel_package(key)
    if key == "trixie":  # the kmod 34 oracle's kernel, indexed by trixie's depmod already
        return kmod34.pristine_root(), kmod34.kernel_package()
    suite, series = SUITE_KERNELS[key]
    deb = kmod34.suite_kernel_package(suite, VM_CACHE / f"apt-{suite}", series)
    return _unpacked(deb), deb


def _image_dir(guest: Guest, base: Path) -> tuple[Path, list[KernelTree]]:
    kernels = [kernel(key) for key in guest.kernels]
    trees = [tree for tree, _deb in kernels]
    debs = [deb.name for _tree, deb in kernels]
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


def guest_of(key: str) -> str:
    """The guest (GUESTS key) whose image boots VM key ("6.1", "6.12", "trixie", "bullseye")."""
    for name, guest in GUESTS.items():
        if key in guest.kernels:
            return name
    known = [k for guest in GUESTS.values() for k in guest.kernels]
    raise ValueError(f"unknown kernel {key!r}; known: {', '.join(known)}")


def build(guest_name: str = "bookworm") -> Path:
    """Build (or find) a guest's current image directory; safe to call from parallel sessions."""
    guest = GUESTS[guest_name]
    with _locked():
        base = _base_dir(guest)
        dest, trees = _image_dir(guest, base)
        if not (dest / ".ready").exists():
            _base_tree(guest, base)
            shutil.rmtree(dest, ignore_errors=True)
            tmp = Path(tempfile.mkdtemp(prefix=".image-", dir=VM_CACHE))
            try:
                _build_image(guest, base, trees, tmp)
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
    """The boot files for VM key ("6.1", "6.12", "trixie", "bullseye"), built on first use."""
    directory = build(guest_of(key))
    tree, _deb = kernel(key)
    return VMImage(key, tree.release, tree.vmlinuz, directory / f"initrd-{tree.release}.gz",
                   directory / "rootfs.img", directory / "id_ed25519")
