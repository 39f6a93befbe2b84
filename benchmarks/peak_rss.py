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
data = sys.stdin.buffer.read()  # pipelining: the payload; else argv[1] is the payload's file
script = data or (open(sys.argv[1], "rb").read() if sys.argv[1:] else b"")
found = re.search(rb"module_fqn='([\\w.]+)'", script)
rc = subprocess.run([{python!r}, *sys.argv[1:]], input=data).returncode
with open({log!r}, "a") as out:
    name = found.group(1).decode().rsplit(".", 1)[-1] if found else "?"
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
