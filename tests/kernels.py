# SPDX-License-Identifier: GPL-3.0-or-later
"""Real Debian kernel trees for tests and benchmarks, fetched once and cached outside the repo.

The cache directory is $KMOD_TEST_CACHE (default /var/cache/kernel-kmod-tests). Each
kernel package is downloaded with ``apt-get download`` and unpacked with ``dpkg -x``;
the pristine root then gets its indexes from the real ``depmod -b`` (kmod is the oracle).
Tests must treat a pristine root as read-only: use ``scratch_root`` to get a private,
hard-linked copy to write into (new files replace links, originals stay intact).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import shutil
import subprocess
import tempfile
import typing as t
from pathlib import Path

CACHE = Path(os.environ.get("KMOD_TEST_CACHE", "/var/cache/kernel-kmod-tests"))

# key -> (Debian package, kernel release). 6.1 ships plain signed .ko, 6.12 ships .ko.xz.
KERNELS = {
    "6.1": ("linux-image-6.1.0-56-amd64", "6.1.0-56-amd64"),
    "6.12": ("linux-image-6.12.117+deb12-amd64-unsigned", "6.12.117+deb12-amd64"),
}


class KernelTree(t.NamedTuple):
    key: str
    root: Path
    release: str

    @property
    def moddir(self) -> Path:
        return self.root / "lib" / "modules" / self.release

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.release}"


@contextlib.contextmanager
def _locked(name: str) -> t.Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def kernel_package(key: str) -> Path:
    """The cached .deb of a kernel, downloaded on first use."""
    package = KERNELS[key][0]
    with _locked(package):
        found = glob.glob(str(CACHE / f"{package}_*.deb"))
        if not found:
            subprocess.run(["apt-get", "download", "-q", package], cwd=CACHE, check=True,
                           stdout=subprocess.DEVNULL)
            found = glob.glob(str(CACHE / f"{package}_*.deb"))
        return Path(found[0])


def pristine_root(key: str) -> KernelTree:
    """An unpacked kernel package whose indexes were written by the real depmod."""
    package, release = KERNELS[key]
    root = CACHE / "roots" / release
    with _locked(f"root-{release}"):
        if not (root / ".ready").exists():
            deb = kernel_package(key)
            shutil.rmtree(root, ignore_errors=True)
            tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=CACHE))
            subprocess.run(["dpkg", "-x", str(deb), str(tmp)], check=True)
            subprocess.run(["depmod", "-b", str(tmp), release], check=True)
            root.parent.mkdir(parents=True, exist_ok=True)
            tmp.rename(root)
            (root / ".ready").touch()
    return KernelTree(key, root, release)


def scratch_root(key: str, dest: Path) -> KernelTree:
    """A private copy of a pristine root at dest (hard links: cheap, and writes by
    rename never touch the cached originals)."""
    tree = pristine_root(key)
    dest = Path(dest)
    subprocess.run(["cp", "-al", str(tree.root), str(dest)], check=True)
    return KernelTree(key, dest, tree.release)
