# SPDX-License-Identifier: GPL-3.0-or-later
"""Peak RSS of each Ansible module process, for the benchmarks.

``wrapper(log)`` is a Python interpreter stand-in (set it as ``ansible_python_interpreter``)
that runs the module under the real python3 and appends "MODULE KIB" to ``log``: the
module's name from AnsiballZ's ``module_fqn=...``, its peak RSS from getrusage. It adds
a Python start to every task, so the benchmarks use it only for an extra, untimed run.
"""

from __future__ import annotations


def wrapper(log: str, python: str = "/usr/bin/python3") -> str:
    return f"""#!{python}
import re, resource, subprocess, sys
args = sys.argv[1:]
# pipelining: no argument, the payload on stdin; else argv[1] is the payload's file, or an
# option (the role's `python3 -c 'import elftools'` probe): no module, nothing logged
data = sys.stdin.buffer.read() if not args else None
script = data or (open(args[0], "rb").read() if args and not args[0].startswith("-") else b"")
found = re.search(rb"module_fqn='([\\w.]+)'", script)
rc = subprocess.run([{python!r}, *args], input=data).returncode
if found:
    with open({log!r}, "a") as out:
        name = found.group(1).decode().rsplit(".", 1)[-1]
        out.write(f"{{name}} {{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}}\\n")
sys.exit(rc)
"""


def peaks(log_text: str) -> dict[str, float]:
    """Module name -> highest peak RSS in MiB over the runs logged."""
    out: dict[str, float] = {}
    for line in log_text.splitlines():
        name, kib = line.split()
        out[name] = max(out.get(name, 0.0), int(kib) / 1024)
    return out


def shown(found: dict[str, float], limit: float | None = None) -> str:
    """'kmod_load 31.2, copy 22.0' with the limit's verdict for our modules."""
    parts = []
    for name, mib in sorted(found.items()):
        verdict = "" if limit is None or not name.startswith("kmod_") else (
            " (ok)" if mib <= limit else f" (OVER {limit:.0f})")
        parts.append(f"{name} {mib:.1f}{verdict}")
    return ", ".join(parts) or "nothing logged"
