# SPDX-License-Identifier: GPL-3.0-or-later
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Exception hierarchy of the engine; modules map every KmodError to fail_json(msg=...)."""

from __future__ import annotations

import typing as t


class KmodError(Exception):
    """Root of every error the engine raises on purpose.

    ``details`` holds extra result keys a module may pass on to ``fail_json``.
    """

    def __init__(self, msg: str, **details: t.Any) -> None:
        super().__init__(msg)
        self.msg = msg
        self.details = details


class InvalidNameError(KmodError):
    """A module name or alias given by the user is not acceptable."""


class IndexFormatError(KmodError):
    """A modules.*.bin or text index is malformed."""


class ConfigError(KmodError):
    """A modprobe.d/depmod.d file cannot be parsed or written."""


class ElfFormatError(KmodError):
    """A .ko file (after decompression) is not a usable ELF module."""


class ModuleFileError(KmodError):
    """A module file cannot be read or decompressed."""


class ModuleLookupError(KmodError):
    """A name resolves to no module."""


class DependencyCycleError(KmodError):
    """Modules depend on each other in a cycle (depmod refuses to write indexes)."""


class KernelStateError(KmodError):
    """The running kernel's module state cannot be read or is not as required."""


class LoaderError(KmodError):
    """A finit_module/init_module/delete_module call failed; ``errno`` says why."""

    def __init__(self, msg: str, errno: int = 0, module: str | None = None, **details: t.Any) -> None:
        super().__init__(msg, **details)
        self.errno = errno
        self.module = module
