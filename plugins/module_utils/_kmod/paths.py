# SPDX-License-Identifier: GPL-3.0-or-later
"""Every file the engine reads or writes, under one alternate system root."""

from __future__ import annotations

import dataclasses
import os
import typing as t

# libkmod's default configuration directories, in priority order (earlier wins on
# same-name files). Never prefixed by root in kmod itself; we prefix them so that
# a root= tree is self-contained.
CONFIG_DIRS = ("etc", "run", "usr/local/lib", "usr/lib", "lib")
MODULES_LOAD_DIRS = ("etc", "run", "usr/local/lib", "usr/lib")
# kmod's module directory is a build option (--with-module-directory, kmod >= 32): /lib/modules
# by default; merged-/usr images without the /lib link, and kmod built for /usr/lib/modules,
# have only usr/lib/modules. The first that holds the release wins, else the default.
MODULE_DIRS = ("lib/modules", "usr/lib/modules")


@dataclasses.dataclass(frozen=True)
class KmodPaths:
    """Where module tree, configuration and kernel state live.

    ``root`` is an alternate system root like ``depmod -b`` / ``modprobe -d``;
    ``/proc`` and ``/sys`` are read under it too, so a fixture tree can carry
    its own kernel state.
    """

    root: str = "/"
    kernel_release: str = ""
    kmod_compat: str = "auto"  # the kmod_compat option: generation.detect_generation honours it

    def __post_init__(self) -> None:
        if not self.kernel_release:
            object.__setattr__(self, "kernel_release", os.uname().release)
        object.__setattr__(self, "root", os.path.abspath(self.root or "/"))

    @classmethod
    def from_params(cls, params: t.Mapping[str, t.Any]) -> "KmodPaths":
        return cls(root=params.get("root") or "/", kernel_release=params.get("kernel_release") or "",
                   kmod_compat=params.get("kmod_compat") or "auto")

    def under(self, *parts: str) -> str:
        """A path below root; absolute parts are re-rooted."""
        return os.path.join(self.root, *(p.lstrip("/") for p in parts))

    @property
    def moddir(self) -> str:
        """root/lib/modules/RELEASE, or root/usr/lib/modules/RELEASE when only that exists."""
        for base in MODULE_DIRS:
            path = self.under(base, self.kernel_release)
            if os.path.isdir(path):
                return path
        return self.under(MODULE_DIRS[0], self.kernel_release)

    def module_index(self, name: str) -> str:
        """E.g. module_index('modules.dep.bin')."""
        return os.path.join(self.moddir, name)

    @property
    def modprobe_dirs(self) -> list[str]:
        return [self.under(d, "modprobe.d") for d in CONFIG_DIRS]

    @property
    def depmod_dirs(self) -> list[str]:
        return [self.under(d, "depmod.d") for d in CONFIG_DIRS]

    @property
    def modules_load_dirs(self) -> list[str]:
        return [self.under(d, "modules-load.d") for d in MODULES_LOAD_DIRS]

    def proc(self, *parts: str) -> str:
        return self.under("proc", *parts)

    def sys(self, *parts: str) -> str:
        return self.under("sys", *parts)

    @property
    def is_live(self) -> bool:
        """True when root is '/' and the release is the running kernel's."""
        return self.root == "/" and self.kernel_release == os.uname().release
