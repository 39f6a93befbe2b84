# SPDX-License-Identifier: GPL-3.0-or-later
"""Where kernel.kmod resolves to this checkout: ANSIBLE_COLLECTIONS_PATH entries and sys.path."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from kernels import CACHE

REPO = Path(__file__).resolve().parent.parent


def link_collection(base: Path) -> str:
    """Make base/ansible_collections/kernel/kmod point to this checkout; return base.

    A checkout that already sits in an ansible_collections/kernel/kmod tree (ansible-test's
    copy) is used as it is.
    """
    if REPO.parts[-3:-2] == ("ansible_collections",):
        return str(REPO.parents[2])
    link = base / "ansible_collections" / "kernel" / "kmod"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink() or link.resolve() != REPO:
        tmp = link.with_name(f".kmod-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(REPO)
        tmp.replace(link)  # atomic: a concurrent reader never sees no link
    return str(base)


def checkout_collections_path() -> str:
    """A link kept per checkout in the test cache: a shared one could be repointed by
    another checkout's run while this one imports from it."""
    digest = hashlib.sha1(str(REPO).encode()).hexdigest()[:12]
    return link_collection(CACHE / "collections" / digest)
