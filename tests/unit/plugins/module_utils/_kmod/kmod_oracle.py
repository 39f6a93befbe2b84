# SPDX-License-Identifier: GPL-3.0-or-later
"""Run the real modprobe (kmod, the oracle) many times, cheaply and reproducibly.

modprobe reads the host's /proc/cmdline; when we may (root, unshare available) the
calls run in a private mount namespace with a chosen cmdline bind-mounted over it,
otherwise the host's cmdline is used and reported, so the engine can be given the
same. Results are cached under $KMOD_TEST_CACHE/oracle keyed by everything they
depend on (kmod version, tree, config files, cmdline, queries).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import typing as t
from pathlib import Path

CACHE = Path(os.environ.get("KMOD_TEST_CACHE", "/var/cache/kernel-kmod-tests")) / "oracle"
_ENV = {k: v for k, v in os.environ.items() if k != "MODPROBE_OPTIONS"}


def kmod_version() -> str:
    return subprocess.run(["modprobe", "-V"], capture_output=True, text=True, env=_ENV, check=True).stdout


def can_fake_kernel() -> bool:
    """Whether cmdline and /sys/module can be replaced for modprobe (root and unshare)."""
    return _can_unshare()


def _can_unshare() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None


def _fingerprint(paths: t.Iterable[Path]) -> list[t.Any]:
    out: list[t.Any] = []
    for p in paths:
        if p.is_dir():
            out.append([str(p), _fingerprint(sorted(p.iterdir()))])
        elif p.exists():
            st = p.stat()
            out.append([str(p), st.st_size, st.st_mtime_ns])
    return out


def run_modprobe(root: Path, release: str, queries: list[list[str]], config: list[Path],
                 cmdline: str | None = None,
                 live: t.Sequence[str] | None = None) -> tuple[str, list[tuple[int, str, str]]]:
    """Run `modprobe -d root -S release -C c... ARGS` for each query (a list of args).

    Returns (cmdline modprobe saw, [(rc, stdout, stderr)...]). `config` replaces the
    host's modprobe.d (an empty list means /dev/null: no configuration at all). `live`
    replaces /sys/module by one where exactly these modules are live (needs unshare).
    """
    if live is not None and not can_fake_kernel():
        raise RuntimeError("a fake /sys/module needs root and unshare")
    if not _can_unshare():
        cmdline = Path("/proc/cmdline").read_text()
    elif cmdline is None:
        cmdline = ""
    base = ["modprobe", "-d", str(root), "-S", release]
    for c in config or [Path("/dev/null")]:
        base += ["-C", str(c)]
    moddir = root / "lib" / "modules" / release
    key = hashlib.sha256(json.dumps([
        kmod_version(), base, cmdline, queries, sorted(live) if live is not None else None,
        _fingerprint([moddir / n for n in ("modules.dep.bin", "modules.alias.bin",
                                           "modules.symbols.bin", "modules.builtin.bin",
                                           "modules.builtin.alias.bin", "modules.softdep")]),
        _fingerprint(config)]).encode()).hexdigest()
    cached = CACHE / f"{key}.json"
    if cached.exists():
        return cmdline, [tuple(r) for r in json.loads(cached.read_text())]
    jobs = json.dumps([base + q for q in queries])
    if _can_unshare():
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "cmdline").write_text(cmdline)
            sysmod = ""
            if live is not None:
                sysmod = str(Path(tmp, "module"))
                for name in live:
                    Path(sysmod, name).mkdir(parents=True)
                    Path(sysmod, name, "initstate").write_text("live\n")
                Path(sysmod).mkdir(exist_ok=True)
            script = ('mount --bind "$0/cmdline" /proc/cmdline && '
                      '{ [ -z "$3" ] || mount --bind "$3" /sys/module; } && exec "$1" "$2"')
            proc = subprocess.run(["unshare", "-m", "sh", "-c", script, tmp, sys.executable, __file__, sysmod],
                                  input=jobs, capture_output=True, text=True, env=_ENV, check=True)
    else:
        proc = subprocess.run([sys.executable, __file__], input=jobs, capture_output=True, text=True,
                              env=_ENV, check=True)
    results = json.loads(proc.stdout)
    CACHE.mkdir(parents=True, exist_ok=True)
    part = cached.with_suffix(f".{os.getpid()}.tmp")
    part.write_text(json.dumps(results))
    part.replace(cached)
    return cmdline, [tuple(r) for r in results]


def _run_jobs() -> None:
    """Child side: run every argv from stdin in a small thread pool, print results as JSON."""
    jobs = json.loads(sys.stdin.read())

    def one(argv: list[str]) -> tuple[int, str, str]:
        # bytes, not text=True: universal newlines would turn a config's "\r\n" into "\n"
        p = subprocess.run(argv, capture_output=True, env=_ENV, check=False)
        return p.returncode, p.stdout.decode(errors="surrogateescape"), p.stderr.decode(errors="surrogateescape")

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(one, jobs))
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    _run_jobs()
