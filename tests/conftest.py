# SPDX-License-Identifier: GPL-3.0-or-later
"""Make the repository importable as ansible_collections.kernel.kmod and offer kernel trees."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _collection_path() -> None:
    if "ansible_collections" in REPO.parts:  # already inside a collection tree (ansible-test)
        return
    # One link per checkout: a shared one could be repointed by another checkout's run.
    digest = hashlib.sha1(str(REPO).encode()).hexdigest()[:12]
    base = Path(os.environ.get("KMOD_TEST_CACHE", "/var/cache/kernel-kmod-tests")) / "collections" / digest
    link = base / "ansible_collections" / "kernel" / "kmod"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink() or link.resolve() != REPO:
        tmp = link.with_name(f".kmod-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(REPO)
        tmp.replace(link)
    sys.path.insert(0, str(base))


_collection_path()
sys.path.insert(0, str(Path(__file__).resolve().parent))

from kernels import KernelTree, pristine_root, scratch_root  # noqa: E402


@pytest.fixture(scope="session")
def kernel_6_1() -> KernelTree:
    """Debian 6.1 kernel, plain signed .ko, indexes from the real depmod (read-only!)."""
    return pristine_root("6.1")


@pytest.fixture(scope="session")
def kernel_6_12() -> KernelTree:
    """Debian 6.12 kernel, .ko.xz, indexes from the real depmod (read-only!)."""
    return pristine_root("6.12")


@pytest.fixture(params=["6.1", "6.12"])
def kernel_tree(request) -> KernelTree:
    """Each real kernel in turn (read-only!)."""
    return pristine_root(request.param)


@pytest.fixture
def scratch_kernel(tmp_path):
    """Factory: scratch_kernel('6.1') -> a writable hard-linked copy of that tree."""
    return lambda key: scratch_root(key, tmp_path / f"root-{key}")
