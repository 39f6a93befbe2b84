# SPDX-License-Identifier: GPL-3.0-or-later
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Insert and remove modules with the kernel's syscalls, as libkmod's insert/remove do.

The syscalls sit behind the ``Syscalls`` protocol so tests can record calls and inject
errnos; ``LinuxSyscalls`` is the ctypes implementation. Every failure becomes a
``LoaderError`` whose message names the module and says why (libkmod-module.c
``kmod_module_insert_module``/``kmod_module_remove_module``; the errno texts of kmod's
``tools/insmod.c``, ``tools/modprobe.c`` and ``tools/rmmod.c``).
"""

from __future__ import annotations

import ctypes
import enum
import errno
import os
import platform
import typing as t

from .errors import LoaderError
from .file import detect_compression, read_module_bytes
from .paths import open_file


class InitFlags(enum.IntFlag):
    """finit_module flags (include/uapi/linux/module.h)."""

    IGNORE_MODVERSIONS = 1
    IGNORE_VERMAGIC = 2
    COMPRESSED_FILE = 4


# delete_module flags: libkmod always passes O_NONBLOCK so a busy module fails at once
# instead of blocking until its users go away.
DELETE_FLAGS = os.O_NONBLOCK

# glibc 2.36 has wrappers for init_module and delete_module but not for finit_module.
_FINIT_MODULE_NR = {
    "x86_64": 313, "i386": 350, "i686": 350, "aarch64": 273, "riscv64": 273,
    "loongarch64": 273, "armv7l": 379, "armv6l": 379, "ppc64le": 353, "ppc64": 353,
    "s390x": 344,
}


class Syscalls(t.Protocol):
    """The three module syscalls; each raises OSError carrying the kernel's errno."""

    def finit_module(self, fd: int, params: str, flags: int) -> None:
        ...

    def init_module(self, image: bytes, params: str) -> None:
        ...

    def delete_module(self, name: str, flags: int) -> None:
        ...


class LinuxSyscalls:
    """The real syscalls through libc (needs CAP_SYS_MODULE)."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._finit_nr = _FINIT_MODULE_NR.get(platform.machine())

    def _check(self, ret: int) -> None:
        if ret != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    def finit_module(self, fd: int, params: str, flags: int) -> None:
        if self._finit_nr is None:
            raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))
        self._check(self._libc.syscall(ctypes.c_long(self._finit_nr), ctypes.c_int(fd),
                                       ctypes.c_char_p(params.encode()), ctypes.c_int(flags)))

    def init_module(self, image: bytes, params: str) -> None:
        self._check(self._libc.init_module(ctypes.c_char_p(image), ctypes.c_ulong(len(image)),
                                           ctypes.c_char_p(params.encode())))

    def delete_module(self, name: str, flags: int) -> None:
        self._check(self._libc.delete_module(ctypes.c_char_p(name.encode()), ctypes.c_uint(flags)))


# Why an insertion failed, by errno: the kernel's meaning (kernel/module/main.c) in the
# words of insmod's mod_strerror where it has one.
_INSERT_REASONS = {
    errno.ENOEXEC: "invalid module format (built for another kernel or architecture, "
                   "or a corrupt file; see dmesg)",
    errno.ENOENT: "unknown symbol in module, or unknown parameter (see dmesg)",
    errno.ESRCH: "module has wrong symbol version (see dmesg)",
    errno.EINVAL: "invalid parameters (see dmesg)",
    errno.EPERM: "operation not permitted: module loading is disabled "
                 "(kernel.modules_disabled), the kernel is locked down, or CAP_SYS_MODULE is missing",
    errno.EKEYREJECTED: "module signature rejected: the signing key is not trusted by this kernel",
    errno.ENOKEY: "module is unsigned or signed with an unknown key, and the kernel enforces "
                  "module signatures",
    errno.EBADMSG: "module signature is malformed",
    errno.EBUSY: "another load of the same module is in progress",
    errno.ETXTBSY: "module file is open for writing",
    errno.ENOMEM: "out of memory",
    errno.ENOSYS: "this kernel has no loadable module support",
}

_REMOVE_REASONS = {
    errno.EBUSY: "module is in use",
    errno.EAGAIN: "module is in use",
    errno.EPERM: "operation not permitted: module unloading is disabled, the kernel is "
                 "locked down, or CAP_SYS_MODULE is missing",
    errno.ENOSYS: "this kernel has no loadable module support",
}


def _reason(table: dict[int, str], err: int) -> str:
    return table.get(err) or os.strerror(err)


class Loader:
    """Inserts module files and removes modules, given the kernel's module compression.

    ``kernel_compression`` is what ``/sys/module/compression`` says ("zstd", "xz",
    "gzip") or None: files compressed that way go to ``finit_module`` for the kernel to
    decompress; others are decompressed here and passed to ``init_module``.
    """

    def __init__(self, syscalls: Syscalls, kernel_compression: str | None = None) -> None:
        self.syscalls = syscalls
        self.kernel_compression = kernel_compression

    def insert(self, path: str, module: str, options: str = "") -> bool:
        """Insert the module file at path; False when the kernel already has the module."""
        try:
            self._insert(path, options)
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                return False
            if exc.filename is not None:  # the file itself, not the syscall
                raise LoaderError(f"Cannot load module {module!r}: cannot read {path}: "
                                  f"{exc.strerror}", errno=exc.errno or 0, module=module,
                                  path=path) from exc
            raise LoaderError(f"Cannot load module {module!r} from {path}: "
                              f"{_reason(_INSERT_REASONS, exc.errno or 0)}",
                              errno=exc.errno or 0, module=module, path=path) from exc
        return True

    def _insert(self, path: str, options: str) -> None:
        with os.fdopen(open_file(path), "rb") as f:  # a symlink in root= is followed inside it
            compression = detect_compression(f.read(6))
            if compression is None or compression == self.kernel_compression:
                flags = InitFlags.COMPRESSED_FILE if compression else InitFlags(0)
                try:
                    self.syscalls.finit_module(f.fileno(), options, int(flags))
                    return
                except OSError as exc:
                    if exc.errno != errno.ENOSYS:
                        raise
        image, _compression = read_module_bytes(path)
        self.syscalls.init_module(image, options)

    def remove(self, module: str) -> bool:
        """Remove a loaded module; False when the kernel does not have it."""
        try:
            self.syscalls.delete_module(module, DELETE_FLAGS)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return False
            raise LoaderError(f"Cannot remove module {module!r}: "
                              f"{_reason(_REMOVE_REASONS, exc.errno or 0)}",
                              errno=exc.errno or 0, module=module) from exc
        return True
