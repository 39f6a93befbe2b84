# SPDX-License-Identifier: GPL-3.0-or-later
"""kmod 28 as an oracle: a Debian 11 (bullseye) chroot with its kmod, and bullseye's 5.10 kernel.

Built and run like the kmod 34 oracle (tests/kmod34.py, whose helpers this reuses): a
minimal bullseye chroot cached under $KMOD_TEST_CACHE/kmod28, the tree bind-mounted at
/tree in a private mount namespace. The 5.10 kernel package is the one the Debian 11 VM
guest boots (tests/vm/images.py), from the same apt cache (vm/apt-bullseye).

Layout of the cache:
  kmod28/chroot-<hash>/     debootstrap --variant=minbase --include=kmod bullseye; .ready
  kmod28/roots/<release>/   bullseye's kernel unpacked, indexed by kmod 28's depmod; .ready
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import kmod34
from kernels import CACHE, KernelTree, _locked

SUITE = "bullseye"
K28 = CACHE / "kmod28"
APT = CACHE / "vm" / f"apt-{SUITE}"  # shared with the Debian 11 VM guest's kernel

available = kmod34.available


def chroot_dir() -> Path:
    """The bullseye chroot with kmod 28, built on first use."""
    return kmod34.suite_chroot(SUITE, K28)


def version() -> str:
    return kmod34.run_in(chroot_dir(), ["kmod", "--version"], text=True).stdout


def depmod(tree: KernelTree, *args: str) -> subprocess.CompletedProcess:
    """kmod 28's depmod on tree, depmod.d taken from the tree (never the chroot's /etc)."""
    return kmod34.run_in(chroot_dir(), ["depmod", "-b", "/tree", "-C", "/tree/etc/depmod.d", *args, tree.release],
                         tree.root, text=True)


def kernel_package() -> Path:
    """bullseye's 5.10 kernel .deb (resolved and downloaded once, then reused as is)."""
    return kmod34.suite_kernel_package(SUITE, APT, r"5\.10")


def pristine_root() -> KernelTree:
    """bullseye's 5.10 kernel unpacked and indexed by kmod 28's depmod. Read-only: copy it
    (scratch_root) to write."""
    deb = kernel_package()
    release = re.sub(r"^linux-image-(.*?)(-unsigned)?_.*$", r"\1", deb.name)
    root = K28 / "roots" / release
    with _locked(f"kmod28-root-{release}"):
        if not (root / ".ready").exists():
            shutil.rmtree(root, ignore_errors=True)
            K28.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=K28))
            try:
                subprocess.run(["dpkg", "-x", str(deb), str(tmp)], check=True)
                tree = KernelTree("bullseye", tmp, release)
                proc = depmod(tree)
                if proc.returncode != 0:
                    raise RuntimeError(f"kmod 28 depmod failed on {tmp}: {proc.stderr}")
                root.parent.mkdir(parents=True, exist_ok=True)
                tmp.rename(root)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            (root / ".ready").touch()
    return KernelTree("bullseye", root, release)


def scratch_root(dest: Path) -> KernelTree:
    """A private hard-linked copy of the pristine bullseye root at dest."""
    tree = pristine_root()
    subprocess.run(["cp", "-al", str(tree.root), str(dest)], check=True)
    return KernelTree(tree.key, Path(dest), tree.release)


if __name__ == "__main__":  # build everything (CI warm-up, or by hand)
    print(version().strip())
    print(pristine_root())
