# SPDX-License-Identifier: GPL-3.0-or-later
"""Session-wide VMs booting real kernels (see docs/vm.md).

Each VM boots at most once per session and is shared by all tests: a test that changes
the guest (loads modules, writes files) undoes it, or calls ``vm.restart()`` for a
pristine guest (costs a boot). Once collection is done, every VM some selected test
needs is launched at once, so that the guests boot side by side (under TCG a boot is
mostly waiting for one emulated core); each fixture then waits for its guest's ssh.
"""

from __future__ import annotations

import shutil
import sys
import typing as t
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qemu import VM  # noqa: E402

# fixture name -> VM key
VM_FIXTURES = {"vm_6_1": "6.1", "vm_6_12": "6.12", "vm_trixie": "trixie", "vm_bullseye": "bullseye"}
# parametrized fixture -> its parameters' fixture names (by param value)
_PARAMETRIZED = {"vm": {"6.1": "vm_6_1", "6.12": "vm_6_12"},
                 "distro_vm": {"trixie": "vm_trixie", "bullseye": "vm_bullseye"}}
_launched: dict[str, VM] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "vm: boots a real kernel in qemu (slow; deselect with -m 'not vm')")


def _needed(items: t.Sequence[pytest.Item]) -> list[str]:
    """The VM fixtures the selected tests use, in first-use order."""
    needed: list[str] = []
    for item in items:
        names = list(getattr(item, "fixturenames", ()))
        params = getattr(getattr(item, "callspec", None), "params", {})
        for name in names:
            fixture = _PARAMETRIZED[name].get(params.get(name)) if name in _PARAMETRIZED else name
            if fixture in VM_FIXTURES and fixture not in needed:
                needed.append(fixture)
    return needed


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly or shutil.which("qemu-system-x86_64") is None:
        return
    for fixture in _needed(session.items):
        key = VM_FIXTURES[fixture]
        try:
            _launched[key] = VM(key).launch()
        except Exception:  # noqa: BLE001 - the fixture boots it again and reports the error
            _launched.pop(key, None)


def _boot(key: str) -> t.Iterator[VM]:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")
    vm = _launched.pop(key, None)
    try:
        if vm is None:
            vm = VM(key).start()
        else:
            vm.wait_ssh()
        yield vm
    finally:
        if vm is not None:
            vm.stop()


def pytest_sessionfinish(session: pytest.Session) -> None:
    for vm in _launched.values():  # launched for tests that did not run (-x, errors)
        vm.stop()
    _launched.clear()


@pytest.fixture(scope="session")
def vm_6_1() -> t.Iterator[VM]:
    """Debian 12 guest, Debian's 6.1 kernel (plain .ko), in qemu, ssh-reachable; shared by the session."""
    yield from _boot("6.1")


@pytest.fixture(scope="session")
def vm_6_12() -> t.Iterator[VM]:
    """Debian 12 guest, Debian 12's 6.12 kernel (.ko.xz), in qemu, ssh-reachable; shared by the session."""
    yield from _boot("6.12")


@pytest.fixture(scope="session")
def vm_trixie() -> t.Iterator[VM]:
    """Debian 13 guest (kmod 34, Python 3.13, python3-pyelftools) booting trixie's own 6.12
    kernel (modules under /usr/lib/modules, indexes by its depmod); shared by the session."""
    yield from _boot("trixie")


@pytest.fixture(scope="session")
def vm_bullseye() -> t.Iterator[VM]:
    """Debian 11 guest (kmod 28, Python 3.9, python3-pyelftools 0.27) booting bullseye's 5.10
    kernel (plain .ko, indexes by its depmod); shared by the session."""
    yield from _boot("bullseye")


@pytest.fixture(params=["6.1", "6.12"])
def vm(request: pytest.FixtureRequest) -> VM:
    """Each Debian 12 kernel's session VM in turn."""
    return request.getfixturevalue(_PARAMETRIZED["vm"][request.param])


@pytest.fixture(params=["trixie", "bullseye"])
def distro_vm(request: pytest.FixtureRequest) -> VM:
    """The Debian 13 and the Debian 11 (Python 3.9) session VMs in turn."""
    return request.getfixturevalue(_PARAMETRIZED["distro_vm"][request.param])
