# SPDX-License-Identifier: GPL-3.0-or-later
"""Loader against FakeSyscalls on real module files: which syscall, which flags, which errors."""

from __future__ import annotations

import errno
import os
import subprocess
import typing as t

import pytest
from fake_kernel import FakeSyscalls

from ansible_collections.kernel.kmod.plugins.module_utils._kmod.errors import LoaderError
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.loader import (
    InitFlags, LinuxSyscalls, Loader)


@pytest.fixture
def plain_ko(kernel_6_1) -> str:
    return str(kernel_6_1.moddir / "kernel/drivers/net/dummy.ko")


@pytest.fixture
def xz_ko(kernel_6_12) -> str:
    return str(kernel_6_12.moddir / "kernel/drivers/net/dummy.ko.xz")


def test_plain_file_goes_to_finit_module(plain_ko):
    sys = FakeSyscalls()
    assert Loader(sys, kernel_compression="xz").insert(plain_ko, "dummy", "numdummies=2")
    assert sys.calls == [("finit_module", plain_ko, "numdummies=2", 0)]


def test_compression_the_kernel_knows_goes_to_finit_module(xz_ko):
    sys = FakeSyscalls()
    assert Loader(sys, kernel_compression="xz").insert(xz_ko, "dummy")
    assert sys.calls == [("finit_module", xz_ko, "", InitFlags.COMPRESSED_FILE)]


@pytest.mark.parametrize("kernel_compression", [None, "zstd"])
def test_other_compression_is_decompressed_for_init_module(xz_ko, kernel_compression):
    sys = FakeSyscalls()
    assert Loader(sys, kernel_compression).insert(xz_ko, "dummy", "a=1")
    expected = subprocess.run(["xz", "-dc", xz_ko], capture_output=True, check=True).stdout
    assert sys.calls == [("init_module", expected, "a=1")]


def test_enosys_from_finit_falls_back_to_init_module(plain_ko):
    sys = FakeSyscalls()
    sys.fail["finit_module"] = [errno.ENOSYS]
    assert Loader(sys).insert(plain_ko, "dummy")
    with open(plain_ko, "rb") as f:
        image = f.read()
    assert [c[0] for c in sys.calls] == ["finit_module", "init_module"]
    assert sys.calls[1] == ("init_module", image, "")


def test_enosys_from_both_means_no_module_support(plain_ko):
    sys = FakeSyscalls()
    sys.fail["finit_module"] = [errno.ENOSYS]
    sys.fail["init_module"] = [errno.ENOSYS]
    with pytest.raises(LoaderError, match="'dummy'.*no loadable module support"):
        Loader(sys).insert(plain_ko, "dummy")


def test_eexist_means_already_loaded(plain_ko):
    sys = FakeSyscalls()
    sys.fail["finit_module"] = [errno.EEXIST]
    assert Loader(sys).insert(plain_ko, "dummy") is False


@pytest.mark.parametrize("err, words", [
    (errno.ENOENT, "unknown symbol in module, or unknown parameter"),
    (errno.EINVAL, "invalid parameters"),
    (errno.ENOEXEC, "invalid module format"),
    (errno.EPERM, "operation not permitted"),
    (errno.EKEYREJECTED, "signature rejected"),
    (errno.ENOKEY, "unsigned or signed with an unknown key"),
    (errno.EBUSY, "in progress"),
    (errno.EIO, os.strerror(errno.EIO)),
])
def test_insert_errors_name_module_and_reason(plain_ko, err, words):
    sys = FakeSyscalls()
    sys.fail["finit_module"] = [err]
    with pytest.raises(LoaderError) as info:
        Loader(sys).insert(plain_ko, "dummy", "numdummies=x")
    assert "'dummy'" in info.value.msg and plain_ko in info.value.msg
    assert words in info.value.msg
    assert info.value.errno == err and info.value.module == "dummy"


def test_init_module_errors_are_mapped_too(xz_ko):
    sys = FakeSyscalls()
    sys.fail["init_module"] = [errno.ENOEXEC]
    with pytest.raises(LoaderError, match="'dummy'.*invalid module format"):
        Loader(sys).insert(xz_ko, "dummy")


def test_unreadable_file_is_a_clear_error(tmp_path):
    with pytest.raises(LoaderError, match=r"'ghost': cannot read .*ghost.ko"):
        Loader(FakeSyscalls()).insert(str(tmp_path / "ghost.ko"), "ghost")


def test_remove_is_nonblocking():
    sys = FakeSyscalls()
    assert Loader(sys).remove("dummy")
    assert sys.calls == [("delete_module", "dummy", os.O_NONBLOCK)]


def test_remove_of_missing_module_is_false():
    sys = FakeSyscalls()
    sys.fail["delete_module"] = [errno.ENOENT]
    assert Loader(sys).remove("dummy") is False


@pytest.mark.parametrize("err, words", [
    (errno.EBUSY, "in use"), (errno.EAGAIN, "in use"), (errno.EPERM, "not permitted")])
def test_remove_errors(err, words):
    sys = FakeSyscalls()
    sys.fail["delete_module"] = [err]
    with pytest.raises(LoaderError, match=f"'dummy': .*{words}"):
        Loader(sys).remove("dummy")


def _unprivileged(fn: t.Callable[[], list[str]]) -> list[str]:
    """fn() in a forked child that runs as nobody when we are root; its returned lines."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        status = 1
        try:
            os.close(read_end)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            os.write(write_end, "\n".join(fn()).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        out = f.read()
    assert os.waitpid(pid, 0)[1] == 0
    return out.splitlines()


def test_real_syscalls_fail_cleanly_without_cap_sys_module(plain_ko):
    """The ctypes layer for real, as a user that can never load or remove anything."""
    with open(plain_ko, "rb") as f:
        path = f"/proc/self/fd/{f.fileno()}"  # still readable after dropping privileges

        def calls() -> list[str]:
            out = []
            for call in (lambda: Loader(LinuxSyscalls()).insert(path, "dummy"),
                         lambda: Loader(LinuxSyscalls()).remove("dummy")):
                try:
                    call()
                    out.append("no error")
                except LoaderError as exc:
                    out.append(f"{errno.errorcode[exc.errno]} {exc.msg}")
            return out

        lines = _unprivileged(calls)
    # EPERM without CAP_SYS_MODULE; ENOSYS where the kernel has no module support at all.
    assert lines[0].split()[0] in ("EPERM", "ENOSYS") and "'dummy'" in lines[0], lines
    assert lines[1].split()[0] in ("EPERM", "ENOSYS") and "remove module 'dummy'" in lines[1], lines
