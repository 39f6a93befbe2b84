# SPDX-License-Identifier: GPL-3.0-or-later
"""Make the repository importable as ansible_collections.kernel.kmod and offer kernel trees."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from collection_link import checkout_collections_path  # noqa: E402
from kernels import KernelTree, pristine_root, scratch_root  # noqa: E402

sys.path.insert(0, checkout_collections_path())

# Test data is not collected: the sysfs fixtures hold sysfs's own symlink cycles, which
# pytest would walk into for ever.
collect_ignore_glob = ["*/fixtures"]


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
