# SPDX-License-Identifier: GPL-3.0-or-later
# Must be kept in sync with plugins/doc_fragments/_common.py.
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Argument-spec pieces every kernel.kmod module shares."""

from __future__ import annotations

import typing as t

COMMON_ARGUMENT_SPEC: dict[str, dict[str, t.Any]] = {
    "root": {"type": "path", "default": "/"},
    "kernel_release": {"type": "str"},
    "kmod_compat": {"type": "str", "default": "auto", "choices": ["auto", "28", "30", "34"]},
}


def argument_spec(**options: dict[str, t.Any]) -> dict[str, dict[str, t.Any]]:
    """The shared options plus a module's own."""
    spec = dict(COMMON_ARGUMENT_SPEC)
    spec.update(options)
    return spec
