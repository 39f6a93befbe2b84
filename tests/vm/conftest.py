# SPDX-License-Identifier: GPL-3.0-or-later
"""Session-wide VMs booting the real Debian kernels (see docs/vm.md).

Each VM boots at most once per session, lazily, on first use, and is shared by all
tests: a test that changes the guest (loads modules, writes files) undoes it, or calls
``vm.restart()`` for a pristine guest (costs a boot).
"""

from __future__ import annotations

import shutil
import sys
import typing as t
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qemu import VM  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "vm: boots a real kernel in qemu (slow; deselect with -m 'not vm')")


def _boot(key: str) -> t.Iterator[VM]:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")
    vm = VM(key)
    try:
        yield vm.start()
    finally:
        vm.stop()


@pytest.fixture(scope="session")
def vm_6_1() -> t.Iterator[VM]:
    """Debian 6.1 kernel (plain .ko) in qemu, ssh-reachable; shared by the session."""
    yield from _boot("6.1")


@pytest.fixture(scope="session")
def vm_6_12() -> t.Iterator[VM]:
    """Debian 6.12 kernel (.ko.xz) in qemu, ssh-reachable; shared by the session."""
    yield from _boot("6.12")


@pytest.fixture(params=["6.1", "6.12"])
def vm(request: pytest.FixtureRequest) -> VM:
    """Each kernel's session VM in turn."""
    return request.getfixturevalue("vm_" + request.param.replace(".", "_"))
