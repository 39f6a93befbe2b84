# SPDX-License-Identifier: GPL-3.0-or-later
"""Engine time of configuration edits that used to be quadratic (issue 10, item 6).

1. kmod_blacklist's edit: one name into a 100k-line modprobe.d file.
2. kmod_blacklist's edit: 3000 names into an empty file (blacklist and disable).
3. kmod_blacklist with mode=disable and 100 names on a full real tree: plan, apply
   (the locked re-edit) and verify (every alias of every name resolved like modprobe).
4. kmod_load persistent: options for one module into a 100k-line modprobe.d file.

Prints CPU seconds per case (best of --repeat runs); no timing tests.
Run from the repository: python3 benchmarks/bench_edit.py [--kernel 6.12] [--profile N]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import sys
import tempfile
import time
import typing as t
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
import kernels  # noqa: E402
from collection_link import checkout_collections_path  # noqa: E402

sys.path.insert(0, checkout_collections_path())
from ansible_collections.kernel.kmod.plugins.module_utils._kmod import blacklist  # noqa: E402
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.config_edit import (  # noqa: E402
    edit_blacklist, edit_options)
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.paths import KmodPaths  # noqa: E402


def big_file(lines: int, continued: bool = True) -> str:
    """A modprobe.d file of every kind of line; with continued, 40% of its lines end in a
    backslash (the slow path of the line reader), else none (as real files)."""
    out = []
    cont = " \\\n" if continued else "\n"
    for i in range(lines // 5):
        out += [f"blacklist mod{i}\n", f"# comment {i}{cont}", f"options opt{i} a=1{cont}", " b=2\n",
                f"alias a{i} mod{i}\n"]
    return "".join(out)


def best(fn: t.Callable[[], object], repeat: int) -> float:
    """Least CPU seconds of this process over repeat runs (a busy machine inflates wall time)."""
    times = []
    for _attempt in range(repeat):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def disable_on_tree(key: str, workdir: Path) -> t.Callable[[], object]:
    """kmod_blacklist mode=disable, 100 module names of the tree, into a fresh file each run."""
    tree = kernels.scratch_root(key, workdir / "root")
    names = sorted(os.path.basename(p).split(".", 1)[0] for p in
                   (tree.moddir / "kernel" / "drivers" / "net").rglob("*.ko*"))[:100]
    paths = KmodPaths(str(tree.root), tree.release)
    conf = tree.root / "etc/modprobe.d/kernel-kmod-blacklist.conf"

    def run() -> object:
        if conf.exists():
            conf.unlink()
        plan = blacklist.plan_blacklist(paths, names, "present", "disable", "/" + str(conf.relative_to(tree.root)))
        blacklist.apply(plan, None, None)  # type: ignore[arg-type] # no unload: no loader needed
        result = blacklist.verify(plan)
        assert all(r["disabled"] and r["blocked"] for r in result)
        return result

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--kernel", default="6.12", choices=["6.1", "6.12"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", type=int, default=0, help="print the N hottest functions of each case")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-edit-"))
    text = big_file(100_000)
    plain = big_file(100_000, continued=False)
    many = [f"mod{i}" for i in range(3000)]
    cases: list[tuple[str, t.Callable[[], object]]] = [
        ("1 name into a 100k-line file without continuations", lambda: edit_blacklist(plain, ["dummy"], "present")),
        ("1 name into a 100k-line file, 40% continued lines", lambda: edit_blacklist(text, ["dummy"], "present")),
        ("1 name out of a 100k-line file", lambda: edit_blacklist(text, ["mod777"], "absent")),
        ("3000 names into an empty file", lambda: edit_blacklist(None, many, "present")),
        ("3000 names into an empty file, disable", lambda: edit_blacklist(None, many, "present", "disable")),
        ("3000 names into the 100k-line file, disable",
         lambda: edit_blacklist(text, many, "present", "disable")),
        ("options of 1 module into a 100k-line file", lambda: edit_options(text, "dummy", "numdummies=2")),
        (f"disable 100 names on the {args.kernel} tree (plan+apply+verify)", disable_on_tree(args.kernel, workdir)),
    ]
    for label, fn in cases:
        if args.profile:
            prof = cProfile.Profile()
            prof.runcall(fn)
            print(f"--- {label}")
            pstats.Stats(prof).sort_stats("cumulative").print_stats(args.profile)
        print(f"{best(fn, args.repeat):8.3f} s  {label}", flush=True)
    shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
