# SPDX-License-Identifier: GPL-3.0-or-later
"""kmod 34 as an oracle: a Debian 13 (trixie) chroot with its kmod, and trixie's own kernel.

kmod 34 needs trixie's glibc, so its depmod/modprobe/modinfo run inside a minimal trixie
chroot built once with debootstrap and cached under $KMOD_TEST_CACHE/kmod34 behind a file
lock (like tests/kernels.py). A tree to work on is bind-mounted at /tree inside the chroot
in a private mount namespace (root and unshare needed), so kmod 34 reads and writes the
tree in place and nothing stays mounted afterwards.

Trixie's kernel package is fetched with apt-get from a second sources list naming the
suite (this machine's apt stays untouched). Its modules live under usr/lib/modules; the
pristine root also gets a ``lib -> usr/lib`` link, as on a merged-/usr system, so that
tools built for /lib/modules (kmod 30 here, kmod 34 with Debian's defaults) find them.

Layout of the cache:
  kmod34/chroot-<hash>/     debootstrap --variant=minbase --include=kmod trixie; .ready
  kmod34/apt/               trixie's package lists and downloaded .debs
  kmod34/roots/<release>/   trixie's kernel unpacked, indexed by kmod 34's depmod; .ready
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import typing as t
from pathlib import Path

from kernels import CACHE, KernelTree, _locked

SUITE = "trixie"
K34 = CACHE / "kmod34"
# Bump when the build logic changes in a way the hashed inputs do not show.
FORMAT = 1
PACKAGES = ["kmod"]
# The kernel package: the one trixie's linux-image-amd64 depends on, unless pinned here
# (e.g. KMOD34_KERNEL=linux-image-6.12.57+deb13-amd64-unsigned).
KERNEL_META = "linux-image-amd64"


def _mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 or one-line format)."""
    for source in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for stanza in source.read_text().split("\n\n"):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
            uris = fields.get("URIs", "").split()
            if uris and "deb" in fields.get("Types", "").split() and "security" not in uris[0] \
                    and "debian" in uris[0]:
                return uris[0]
    lists = Path("/etc/apt/sources.list")
    if lists.exists():
        for line in lists.read_text().splitlines():
            words = line.split()
            if len(words) >= 3 and words[0] == "deb" and "security" not in words[1] and "debian" in words[1]:
                return words[1]
    return "http://deb.debian.org/debian"


def _run(cmd: list[str], **kwargs: t.Any) -> str:
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False, **kwargs)
    if proc.returncode != 0:
        raise RuntimeError(f"kmod 34 oracle build step failed ({proc.returncode}): {' '.join(cmd)}\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def available() -> str | None:
    """None when the oracle can be built and run here, else why not (for pytest.skip)."""
    if os.geteuid() != 0:
        return "the kmod 34 oracle needs root (chroot, mount namespace)"
    for tool in ("debootstrap", "unshare", "chroot", "apt-get", "dpkg"):
        if shutil.which(tool) is None:
            return f"the kmod 34 oracle needs {tool}"
    return None


def suite_chroot(suite: str, base: Path) -> Path:
    """A minimal chroot of suite with kmod (debootstrap), built once under base, behind a lock."""
    key = hashlib.sha256(json.dumps([FORMAT, suite, _mirror(), PACKAGES]).encode()).hexdigest()[:16]
    chroot = base / f"chroot-{key}"
    with _locked(f"{base.name}-chroot"):
        if not (chroot / ".ready").exists():
            shutil.rmtree(chroot, ignore_errors=True)
            base.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".chroot-", dir=base))
            try:
                _run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", suite, str(tmp),
                      _mirror()])
                (tmp / "tree").mkdir(exist_ok=True)
                tmp.rename(chroot)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            (chroot / ".ready").touch()
    return chroot


def chroot_dir() -> Path:
    """The trixie chroot with kmod 34, built on first use."""
    return suite_chroot(SUITE, K34)


def suite_apt(suite: str, apt: Path, *args: str) -> str:
    """apt-get/apt-cache on another suite's lists (kept in apt), apart from this machine's apt state."""
    for sub in ("lists/partial", "cache/archives/partial", "debs"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    sources = apt / f"{suite}.list"
    sources.write_text(f"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {_mirror()} {suite} main\n")
    opts = [f"-o=Dir::Etc::sourcelist={sources}", "-o=Dir::Etc::sourceparts=/dev/null",
            f"-o=Dir::State::Lists={apt / 'lists'}", f"-o=Dir::Cache={apt / 'cache'}",
            "-o=Dir::State::status=/dev/null", "-o=APT::Architecture=amd64", "-q"]
    tool, *rest = args
    return _run([tool, *opts, *rest], cwd=apt / "debs")


def suite_kernel_package(suite: str, apt: Path, series: str, package: str | None = None) -> Path:
    r"""The .deb of the kernel (release `series`, a regex like r"6\.12") that the suite's
    linux-image-amd64 depends on, or of `package`; resolved and downloaded once, then reused."""
    with _locked(f"{apt.parent.name}-{apt.name}"):  # kmod34-apt for trixie's, as before
        cached = sorted((apt / "debs").glob(f"{package or 'linux-image-*'}_*.deb"))
        cached = [deb for deb in cached if re.match(rf"linux-image-{series}\.", deb.name)]
        if cached:
            return cached[-1]
        for attempt in (1, 2):  # stale lists may name a kernel the mirror no longer has
            if attempt == 2 or not (apt / "lists" / ".updated").exists():
                suite_apt(suite, apt, "apt-get", "update")
                (apt / "lists" / ".updated").touch()
            name = package or _suite_kernel(suite, apt, series)
            try:
                suite_apt(suite, apt, "apt-get", "download", name)
            except RuntimeError:
                if attempt == 2:
                    raise
                continue
            return sorted((apt / "debs").glob(f"{name}_*.deb"))[-1]
    raise AssertionError("unreachable")


def _suite_kernel(suite: str, apt: Path, series: str) -> str:
    depends = suite_apt(suite, apt, "apt-cache", "depends", KERNEL_META)
    found = re.findall(rf"Depends: (linux-image-{series}\.\S+-amd64)\s*$", depends, re.M)
    if not found:
        raise RuntimeError(f"no {series} kernel among {suite}'s {KERNEL_META} dependencies:\n{depends}")
    return found[0]


def kernel_package() -> Path:
    """trixie's kernel .deb (resolved and downloaded once, then reused as is)."""
    return suite_kernel_package(SUITE, K34 / "apt", r"6\.12", os.environ.get("KMOD34_KERNEL"))


def run(argv: list[str], tree: Path | None = None, binds: t.Mapping[str, Path] | None = None,
        **kwargs: t.Any) -> subprocess.CompletedProcess:
    """Run argv (a kmod 34 command) in the trixie chroot (see run_in)."""
    return run_in(chroot_dir(), argv, tree, binds, **kwargs)


def run_in(chroot: Path, argv: list[str], tree: Path | None = None, binds: t.Mapping[str, Path] | None = None,
           **kwargs: t.Any) -> subprocess.CompletedProcess:
    """Run argv in chroot, with tree bind-mounted at /tree and each of binds' paths at its
    key (a directory name like "/cfg", made in the chroot if needed).

    No /proc inside: modprobe sees no kernel command line and no live modules."""
    mounts = {"/tree": tree} if tree is not None else {}
    mounts.update(binds or {})
    script = ""
    for inside, outside in mounts.items():
        (chroot / inside.lstrip("/")).mkdir(parents=True, exist_ok=True)
        script += f'mount --bind {shlex.quote(str(outside))} "$0"{shlex.quote(inside)} || exit 97; '
    script += 'exec chroot "$0" "$@"'
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, str(chroot), *argv],
                          capture_output=True, check=False, env=env, stdin=subprocess.DEVNULL, **kwargs)


def version() -> str:
    return run(["kmod", "--version"], text=True).stdout


def depmod(tree: KernelTree, *args: str) -> subprocess.CompletedProcess:
    """kmod 34's depmod on tree, depmod.d taken from the tree (never the chroot's /etc)."""
    return run(["depmod", "-b", "/tree", "-C", "/tree/etc/depmod.d", *args, tree.release], tree.root, text=True)


def modprobe(tree: KernelTree, *args: str, config: t.Sequence[str] = ("/dev/null",),
             binds: t.Mapping[str, Path] | None = None) -> subprocess.CompletedProcess:
    """kmod 34's modprobe -d /tree -S release -C c... (config paths as seen inside the chroot)."""
    conf = [arg for c in config for arg in ("-C", c)]
    return run(["modprobe", "-d", "/tree", "-S", tree.release, *conf, *args], tree.root, binds, text=True,
               errors="surrogateescape")


def modinfo(tree: KernelTree, *args: str) -> subprocess.CompletedProcess:
    """kmod 34's modinfo -b /tree -k release ARGS (module paths given as /tree/...)."""
    return run(["modinfo", "-b", "/tree", "-k", tree.release, *args], tree.root, text=True, errors="surrogateescape")


def pristine_root() -> KernelTree:
    """trixie's 6.12 kernel unpacked (modules under usr/lib/modules, lib -> usr/lib) and
    indexed by kmod 34's depmod. Read-only: copy it (kernels.scratch_root style) to write."""
    deb = kernel_package()
    release = re.sub(r"^linux-image-(.*?)(-unsigned)?_.*$", r"\1", deb.name)
    root = K34 / "roots" / release
    with _locked(f"kmod34-root-{release}"):
        if not (root / ".ready").exists():
            shutil.rmtree(root, ignore_errors=True)
            tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=K34))
            try:
                subprocess.run(["dpkg", "-x", str(deb), str(tmp)], check=True)
                if not (tmp / "lib").exists():
                    (tmp / "lib").symlink_to("usr/lib")
                tree = KernelTree("trixie", tmp, release)
                proc = depmod(tree)
                if proc.returncode != 0:
                    raise RuntimeError(f"kmod 34 depmod failed on {tmp}: {proc.stderr}")
                root.parent.mkdir(parents=True, exist_ok=True)
                tmp.rename(root)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            (root / ".ready").touch()
    return KernelTree("trixie", root, release)


def scratch_root(dest: Path) -> KernelTree:
    """A private hard-linked copy of the pristine trixie root at dest."""
    tree = pristine_root()
    subprocess.run(["cp", "-al", str(tree.root), str(dest)], check=True)
    return KernelTree(tree.key, Path(dest), tree.release)


if __name__ == "__main__":  # build everything (CI warm-up, or by hand)
    print(version().strip())
    print(pristine_root())
