# SPDX-License-Identifier: GPL-3.0-or-later
"""A fake kernel for unit tests: records module syscalls and keeps /proc and /sys up to date.

Like kmod's testsuite (which fakes init_module/delete_module by LD_PRELOAD), the fake
does what the kernel would do to the files the engine reads: /proc/modules and
/sys/module/NAME/{initstate,refcnt,holders,parameters} under a root. Which module a
file is, is asked of kmod's modinfo; what it uses comes from the tree's modules.dep.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import typing as t
from pathlib import Path


def param_types(path: str) -> dict[str, str]:
    """Parameter -> type as the module declares it (kmod's modinfo -F parmtype)."""
    out = subprocess.run(["modinfo", "-F", "parmtype", path], capture_output=True, text=True,
                         check=True).stdout
    return dict(line.split(":", 1) for line in out.splitlines() if ":" in line)


_INTEGERS = {"byte", "short", "ushort", "int", "uint", "long", "ulong", "ullong"}


def shown_value(kind: str | None, value: str) -> str:
    """What sysfs shows for a value the kernel parsed as kind (kernel/params.c param_get_*);
    ValueError where the kernel's parser refuses it (the load fails with EINVAL)."""
    if kind in _INTEGERS:
        return str(int(value, 0))
    if kind == "hexint":
        return f"0x{int(value, 0):08x}"
    if kind in ("bool", "invbool"):
        first = value[:1].lower() if value.lower() not in ("on", "off") else value.lower()
        truth = {"": True, "y": True, "t": True, "1": True, "on": True,
                 "n": False, "f": False, "0": False, "off": False}[first]
        return "Y" if truth != (kind == "invbool") else "N"
    return value


def kernel_name(path: str) -> str:
    """The name the kernel registers a module file under, as kmod's modinfo reads it."""
    out = subprocess.run(["modinfo", "-F", "name", path], capture_output=True, text=True,
                         check=True).stdout.strip()
    return out or _file_modname(path)


class FakeSyscalls:
    """Records every call; ``fail[op]`` is a list of errnos raised by successive calls."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.fail: dict[str, list[int]] = {}

    def _maybe_fail(self, op: str) -> None:
        pending = self.fail.get(op)
        if pending:
            err = pending.pop(0)
            raise OSError(err, os.strerror(err))

    def finit_module(self, fd: int, params: str, flags: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        self.calls.append(("finit_module", path, params, flags))
        self._maybe_fail("finit_module")
        self.inserted(path, params)

    def init_module(self, image: bytes, params: str) -> None:
        self.calls.append(("init_module", image, params))
        self._maybe_fail("init_module")
        self.inserted_image(image, params)

    def delete_module(self, name: str, flags: int) -> None:
        self.calls.append(("delete_module", name, flags))
        self._maybe_fail("delete_module")
        self.deleted(name)

    # Hooks for FakeKernel.
    def inserted(self, path: str, params: str) -> None:
        pass

    def inserted_image(self, image: bytes, params: str) -> None:
        pass

    def deleted(self, name: str) -> None:
        pass


class FakeKernel(FakeSyscalls):
    """FakeSyscalls that also maintain the module state files under ``root``.

    A module loads only when every module of its modules.dep line is loaded (else
    ENOENT, "unknown symbol"); it then holds each of them. Removing a module with
    holders or a refcount gives EBUSY. ``compression`` is written to
    /sys/module/compression.
    """

    def __init__(self, root: Path, release: str, compression: str | None = None) -> None:
        super().__init__()
        self.root = Path(root)
        self.moddir = self.root / "lib/modules" / release
        self.deps: dict[str, list[str]] = {}
        self.paths: dict[str, str] = {}
        with open(self.moddir / "modules.dep", encoding="utf-8") as f:
            for line in f:
                path, _sep, deps = line.partition(":")
                name = _file_modname(path)
                self.deps[name] = [_file_modname(d) for d in deps.split()]
                self.paths[name] = str(self.moddir / path)
        self.order: list[str] = []
        # Parameters declared with permission 0: the kernel shows them nowhere in sysfs.
        self.hidden_params: set[str] = set()
        # (module, parameter) -> what the module makes of a value, as sysfs then shows it
        # (loop rounds max_part up to 2^n - 1: 4 shows 7).
        self.normalize: dict[tuple[str, str], t.Callable[[str], str]] = {}
        # module -> module it pins without being a holder (as libcrc32c's crypto transform
        # pins crc32c_intel): a refcount only, released when the pinning module goes.
        self.pins: dict[str, str] = {}
        self.sysmod = self.root / "sys/module"
        self.sysmod.mkdir(parents=True, exist_ok=True)
        (self.root / "proc").mkdir(parents=True, exist_ok=True)
        if compression:
            (self.sysmod / "compression").write_text(compression + "\n")
        self._write_proc()

    def load(self, name: str, params: str = "", refcnt: int = 0) -> None:
        """Put a module into the kernel directly (test setup)."""
        self.inserted(self.paths[name], params)
        if refcnt:
            (self.sysmod / name / "refcnt").write_text(f"{refcnt}\n")
            self._write_proc()

    def loaded(self) -> list[str]:
        return list(self.order)

    def inserted(self, path: str, params: str) -> None:
        name = kernel_name(path)
        self.register(name, self.deps.get(_file_modname(path), []), params,
                      param_types(path) if params else {})

    def inserted_image(self, image: bytes, params: str) -> None:
        tmp = self.root / ".image.ko"
        tmp.write_bytes(image)
        try:
            name = kernel_name(str(tmp))
        finally:
            tmp.unlink()
        self.register(name, self.deps.get(name, []), params)

    def register(self, name: str, deps: list[str], params: str = "",
                 types: dict[str, str] | None = None) -> None:
        """The kernel side of a successful load (also usable for modules from nowhere).

        Like the kernel, a module is known by its this_module name: a second module of
        that name (another file, a copy under another file name) gets EEXIST.
        """
        if name in self.order:
            raise OSError(errno.EEXIST, os.strerror(errno.EEXIST))
        if any(d not in self.order for d in deps):
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))
        shown = {}
        for word in params.split():
            key, _sep, value = word.partition("=")
            try:
                shown[key] = shown_value((types or {}).get(key), value.strip('"'))
            except (ValueError, KeyError):
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL)) from None
        mod = self.sysmod / name
        (mod / "holders").mkdir(parents=True)
        (mod / "parameters").mkdir()
        (mod / "initstate").write_text("live\n")
        (mod / "refcnt").write_text("0\n")
        for key, value in shown.items():
            if key not in self.hidden_params:
                value = self.normalize.get((name, key), str)(value)
                (mod / "parameters" / key).write_text(value + "\n")
        for dep in deps:
            (self.sysmod / dep / "holders" / name).symlink_to(mod)
            self._add_refcnt(dep, 1)
        if self.pins.get(name) in self.order:
            self._add_refcnt(self.pins[name], 1)
        self.order.insert(0, name)
        self._write_proc()

    def deleted(self, name: str) -> None:
        mod = self.sysmod / name
        if name not in self.order:
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))
        if int((mod / "refcnt").read_text()) or any((mod / "holders").iterdir()):
            raise OSError(errno.EWOULDBLOCK, os.strerror(errno.EWOULDBLOCK))
        for dep in self.order:
            holder = self.sysmod / dep / "holders" / name
            if holder.is_symlink():
                holder.unlink()
                self._add_refcnt(dep, -1)
        if self.pins.get(name) in self.order:
            self._add_refcnt(self.pins[name], -1)
        shutil.rmtree(mod)
        self.order.remove(name)
        self._write_proc()

    def _add_refcnt(self, name: str, delta: int) -> None:
        f = self.sysmod / name / "refcnt"
        f.write_text(f"{int(f.read_text()) + delta}\n")

    def _write_proc(self) -> None:
        lines = []
        for name in self.order:
            mod = self.sysmod / name
            holders = sorted(p.name for p in (mod / "holders").iterdir())
            used = "".join(h + "," for h in holders) or "-"
            refcnt = int((mod / "refcnt").read_text())
            lines.append(f"{name} 16384 {refcnt} {used} Live 0x0000000000000000\n")
        (self.root / "proc/modules").write_text("".join(lines))


def _file_modname(path: str) -> str:
    return os.path.basename(path).split(".", 1)[0].replace("-", "_")
