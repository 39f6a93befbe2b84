# SPDX-License-Identifier: GPL-3.0-or-later
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Every file the engine reads or writes, under one alternate system root.

With ``root`` other than '/', every path is resolved the way a process chrooted into
root would see it: components are walked one by one, a symlink (relative or absolute)
is followed inside the image (an absolute target means ROOT/target), '..' never climbs
above root, and more than ``MAX_SYMLINKS`` links on one path is an error (ELOOP). A
path handed out by a confined ``KmodPaths`` stays confined wherever the engine opens
it: ``open_file``/``open_dir`` (and atomic.py, file.py on top of them) find the root
the path lies under, resolve it again and walk it with O_NOFOLLOW directory fds, so
a symlink swapped in after resolution fails instead of leading out.

With root '/' (the live system) paths are used as they are, like kmod does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import os
import re
import stat
import typing as t

from .errors import KmodError

# libkmod's default configuration directories, in priority order (earlier wins on
# same-name files). Never prefixed by root in kmod itself; we prefix them so that
# a root= tree is self-contained.
CONFIG_DIRS = ("etc", "run", "usr/local/lib", "usr/lib", "lib")
MODULES_LOAD_DIRS = ("etc", "run", "usr/local/lib", "usr/lib")
# kmod's module directory is a build option (--with-module-directory, kmod >= 32): /lib/modules
# by default; merged-/usr images without the /lib link, and kmod built for /usr/lib/modules,
# have only usr/lib/modules. The first that holds the release wins, else the default.
MODULE_DIRS = ("lib/modules", "usr/lib/modules")

# Linux's MAXSYMLINKS: more links than this on one path is ELOOP.
MAX_SYMLINKS = 40

# depmod's is_version_number(): a release starts with "N.N".
_VERSION_RE = re.compile(r"[0-9]+\.[0-9]+")

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _O_CLOEXEC

# Roots of every confined KmodPaths of this process: open_file/open_dir/atomic.py
# confine any path below one of them. A module run is one short-lived process.
_CONFINED_ROOTS: set[str] = set()
# Inside resolution_cache(): directory path -> resolve_in's answer, for open_file.
_RESOLVED_DIRS: dict[str, str] | None = None


class PathError(KmodError):
    """A path cannot be used: it is malformed, loops, or a file there cannot be read or written."""


class NotRegularFileError(PathError):
    """A directory, FIFO, device or socket where a regular file is expected."""


def _encodable(value: str) -> bool:
    try:
        os.fsencode(value)
    except UnicodeError:
        return False
    return True


def check_path_value(value: str, option: str) -> str:
    """``value`` if the OS can take it as a path; PathError naming ``option`` if not."""
    if "\0" in value:
        raise PathError(f"{option} {value!r} contains a NUL byte", option=option)
    if not _encodable(value):
        raise PathError(f"{option} {value!r} is not valid text (lone surrogate)", option=option)
    return value


def check_kernel_release(release: str, option: str = "kernel_release") -> str:
    """``release`` if it is a kernel release (one path component starting "N.N", as depmod's
    is_version_number wants); PathError naming ``option`` if not."""
    if not isinstance(release, str) or not release:
        raise PathError(f"{option} must be a non-empty kernel release", option=option)
    check_path_value(release, option)
    if "/" in release or release in (".", "..") or any(ord(c) < 32 or ord(c) == 127 for c in release):
        raise PathError(f"{option} {release!r} is not a kernel version: it must be one path component "
                        "without '/' or control characters", option=option)
    if not _VERSION_RE.match(release):
        raise PathError(f"{option} {release!r} is not a kernel version (it must start with N.N, like "
                        "'uname -r' prints)", option=option)
    return release


def _components(path: str) -> list[str]:
    return [c for c in path.split("/") if c and c != "."]


def resolve_in(root: str, path: str, follow: bool = True) -> str:
    """``path`` (inside the image) as a chrooted process at ``root`` would reach it.

    ``follow=False`` leaves a symlink in the last component unresolved (lstat-like).
    Below a component that does not exist the rest is taken lexically (still below
    root); a '..' back above it resumes the real walk, so the result never goes through
    a symlink. Raises PathError on a symlink loop or an unreadable component.
    """
    # The kernel follows a last symlink given as "link/" or "link/." (it is no longer last).
    follow = follow or path.endswith("/") or path.rsplit("/", 1)[-1] == "."
    pending = _components(path)
    pending.reverse()
    done: list[str] = []
    links = 0
    missing_at: int | None = None  # len(done) where the first missing component went
    while pending:
        comp = pending.pop()
        if comp == "..":
            if done:
                done.pop()
            if missing_at is not None and len(done) <= missing_at:
                missing_at = None
            continue
        if missing_at is not None:
            done.append(comp)
            continue
        current = os.path.join(root, *done, comp)
        try:
            st = os.lstat(current)
        except (FileNotFoundError, NotADirectoryError):
            missing_at = len(done)
            done.append(comp)
            continue
        except OSError as exc:
            raise PathError(f"Cannot resolve {path} under {root}: {current}: {exc.strerror}",
                            path=current) from exc
        if stat.S_ISLNK(st.st_mode) and (pending or follow):
            links += 1
            if links > MAX_SYMLINKS:
                raise PathError(f"Cannot resolve {path} under {root}: too many levels of symbolic links "
                                f"(a symlink loop at {current}?)", path=current)
            try:
                target = os.readlink(current)
            except OSError as exc:
                raise PathError(f"Cannot read symlink {current}: {exc.strerror}", path=current) from exc
            if target.startswith("/"):
                done = []  # absolute: from the image's own '/'
            pending.extend(reversed(_components(target)))
            continue
        done.append(comp)
    return os.path.join(root, *done)


def confining_root(path: str) -> str | None:
    """The root of a confined KmodPaths that ``path`` lies under (the innermost), or None."""
    best = None
    for root in _CONFINED_ROOTS:
        if (path == root or path.startswith(root + "/")) and (best is None or len(root) > len(best)):
            best = root
    return best


def resolve_host(path: str, follow: bool = True) -> str:
    """``path`` resolved inside the confined root it lies under (see confining_root);
    unchanged when it lies under none (the live system, or a temporary file)."""
    check_path_value(path, "path")
    root = confining_root(path)
    return path if root is None else resolve_in(root, path[len(root):], follow)


def _relative(root: str, path: str) -> list[str]:
    return _components(path[len(root):])


def _walk_dirs(start: str, comps: t.Sequence[str], create: bool) -> int:
    """A directory fd for start/comps, every component opened with O_NOFOLLOW (missing ones
    created when ``create``); ``start`` itself is opened normally. OSError as os.open
    raises it (ELOOP/ENOTDIR for a symlink that appeared after resolution)."""
    fd = os.open(start, _O_DIR)
    try:
        for comp in comps:
            try:
                nfd = os.open(comp, _O_DIR | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(comp, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
                nfd = os.open(comp, _O_DIR | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except OSError:
        os.close(fd)
        raise
    return fd


def open_dir(path: str, create: bool = False) -> int:
    """An O_RDONLY directory fd of ``path``, confined to the root it lies under (if any);
    ``create`` makes missing directories (inside that root). OSError as os.open raises
    it; PathError on a symlink loop or a NUL byte."""
    check_path_value(path, "path")
    root = confining_root(path)
    if root is None:
        # The live system: follow symlinks as the admin set them up (a dangling one
        # is resolved to its target, which is then created).
        real = os.path.realpath(path)
        return _walk_dirs("/", _components(real), create)
    resolved = resolve_in(root, path[len(root):], follow=True)
    return _walk_dirs(root, _relative(root, resolved), create)


@contextlib.contextmanager
def resolution_cache() -> t.Iterator[None]:
    """Within it, open_file resolves each directory once (depmod reads thousands of files
    from a few hundred directories, and resolving every component of every path was a
    fifth of its reading time). As safe as without: open_file still walks the resolved
    path from the root with O_NOFOLLOW, so a symlink swapped in after it was cached fails
    (ELOOP/ENOTDIR) instead of leading out; a file that is itself a symlink is resolved
    in full. Forked workers inherit the cache and fill their own copy."""
    global _RESOLVED_DIRS  # pylint: disable=global-statement
    outer, _RESOLVED_DIRS = _RESOLVED_DIRS, {}
    try:
        yield
    finally:
        _RESOLVED_DIRS = outer


def open_file(path: str, flags: int = os.O_RDONLY) -> int:
    """os.open(path, flags) confined to the root ``path`` lies under: the path is resolved
    chroot-like and opened component by component with O_NOFOLLOW. Outside any confined
    root it is a plain os.open. OSError as os.open raises it; PathError on loops/NUL."""
    check_path_value(path, "path")
    flags |= _O_CLOEXEC
    root = confining_root(path)
    if root is None:
        return os.open(path, flags)
    head, _sep, name = path.rpartition("/")
    if _RESOLVED_DIRS is not None and name not in ("", ".", "..") and len(head) >= len(root):
        resolved_dir = _RESOLVED_DIRS.get(head)
        if resolved_dir is None:
            resolved_dir = _RESOLVED_DIRS[head] = resolve_in(root, head[len(root):], follow=True)
        try:
            return _open_resolved(root, os.path.join(resolved_dir, name), flags)
        except OSError as exc:
            # O_NOFOLLOW met a symlink: the file is one, or a directory was swapped for one
            # (ENOTDIR with O_DIRECTORY); resolved in full below, as without the cache
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
    return _open_resolved(root, resolve_in(root, path[len(root):], follow=True), flags)


def _open_resolved(root: str, resolved: str, flags: int) -> int:
    """open_file's walk of a path resolve_in gave (no symlinks, no '..'), every component
    opened with O_NOFOLLOW from root."""
    comps = _relative(root, resolved)
    if not comps:
        return os.open(root, flags)
    dfd = _walk_dirs(root, comps[:-1], False)
    try:
        return os.open(comps[-1], flags | os.O_NOFOLLOW, dir_fd=dfd)
    finally:
        os.close(dfd)


@dataclasses.dataclass(frozen=True)
class KmodPaths:
    """Where module tree, configuration and kernel state live.

    ``root`` is an alternate system root like ``depmod -b`` / ``modprobe -d``;
    ``/proc`` and ``/sys`` are read under it too, so a fixture tree can carry
    its own kernel state. Paths under a root other than '/' are resolved like a
    chroot would (see the module docstring); ``kernel_release`` must be a release
    (PathError otherwise).
    """

    root: str = "/"
    kernel_release: str = ""
    kmod_compat: str = "auto"  # the kmod_compat option: generation.detect_generation honours it

    def __post_init__(self) -> None:
        check_path_value(self.root or "/", "root")
        if self.kernel_release:
            check_kernel_release(self.kernel_release)
        else:
            object.__setattr__(self, "kernel_release", os.uname().release)
        object.__setattr__(self, "root", os.path.abspath(self.root or "/"))
        if self.confined:
            _CONFINED_ROOTS.add(self.root)

    @classmethod
    def from_params(cls, params: t.Mapping[str, t.Any]) -> "KmodPaths":
        """From module options; also checks that ``root`` is an existing directory."""
        paths = cls(root=params.get("root") or "/", kernel_release=params.get("kernel_release") or "",
                    kmod_compat=params.get("kmod_compat") or "auto")
        paths.check_root()
        return paths

    @property
    def confined(self) -> bool:
        return self.root != "/"

    def check_root(self) -> None:
        """PathError naming ``root`` unless it is an existing directory (nothing creates it)."""
        try:
            st = os.stat(self.root)
        except OSError as exc:
            raise PathError(f"root {self.root} cannot be used: {exc.strerror}", path=self.root) from exc
        if not stat.S_ISDIR(st.st_mode):
            raise PathError(f"root {self.root} is not a directory", path=self.root)

    def resolve(self, path: str, follow: bool = True) -> str:
        """A path inside the image (absolute, or relative to its '/') or already below root,
        as the host path a chrooted process would reach; never outside root.

        On the live system this is os.path.realpath (with ``follow=False`` for the last
        component's directory only).
        """
        check_path_value(path, "path")
        if not self.confined:
            full = os.path.join("/", path)
            if follow:
                return os.path.realpath(full)
            head, name = os.path.split(os.path.normpath(full))
            return os.path.join(os.path.realpath(head), name)
        if path == self.root or path.startswith(self.root + "/"):
            path = path[len(self.root):]
        return resolve_in(self.root, path, follow)

    def under(self, *parts: str, follow: bool = True) -> str:
        """A path below root; absolute parts are re-rooted. Confined (resolved) when root is
        not '/'; ``follow=False`` keeps a symlink in the last component (a file we replace)."""
        joined = os.path.join("/", *(p.lstrip("/") for p in parts))
        if not self.confined:
            check_path_value(joined, "path")
            return os.path.join(self.root, *(p.lstrip("/") for p in parts))
        return resolve_in(self.root, check_path_value(joined, "path"), follow)

    @functools.cached_property
    def moddir(self) -> str:
        """The module directory, resolved inside root: what the engine opens and walks."""
        return self.under(self.module_dir_base, self.kernel_release)

    @functools.cached_property
    def module_dir_base(self) -> str:
        """lib/modules, or usr/lib/modules when only that holds the release (MODULE_DIRS)."""
        for base in MODULE_DIRS:
            if os.path.isdir(self.under(base, self.kernel_release)):
                return base
        return MODULE_DIRS[0]

    @functools.cached_property
    def moddir_shown(self) -> str:
        """The module directory as kmod names it (``-d ROOT``: ROOT/lib/modules/RELEASE, no
        symlink resolved), for module paths in results, which must equal kmod's output.
        Files opened by such a path are confined again when they are opened."""
        return os.path.join(self.root, self.module_dir_base, self.kernel_release)

    def module_index(self, name: str) -> str:
        """E.g. module_index('modules.dep.bin')."""
        return os.path.join(self.moddir, name)

    @functools.cached_property
    def modprobe_dirs(self) -> list[str]:
        return [self.under(d, "modprobe.d") for d in CONFIG_DIRS]

    @functools.cached_property
    def depmod_dirs(self) -> list[str]:
        return [self.under(d, "depmod.d") for d in CONFIG_DIRS]

    @functools.cached_property
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
