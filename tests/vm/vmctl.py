# SPDX-License-Identifier: GPL-3.0-or-later
"""Command line for the test VMs (molecule's create/destroy playbooks, manual debugging).

    vmctl.py build                              build/refresh the cached images (every guest)
    vmctl.py start NAME --kernel 6.1 [--port P] boot, wait for ssh, print its host vars (JSON)
    vmctl.py run NAME -- CMD...                 run a command in the guest over ssh
    vmctl.py reboot NAME                        reboot the guest (disk changes are kept)
    vmctl.py console NAME                       print its serial console (boot log, sshd)
    vmctl.py stop NAME                          kill it (the snapshot disk is dropped)
    vmctl.py inventory [NAME...]                YAML inventory of the running named VMs
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from images import GUESTS, build  # noqa: E402
from qemu import RUN_DIR, VM, inventory  # noqa: E402


def _running(names: list[str]) -> list[VM]:
    names = names or sorted(p.parent.name for p in RUN_DIR.glob("*/state.json"))
    vms = [VM.attach(name) for name in names]
    return [vm for vm in vms if vm.alive()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build")
    start = sub.add_parser("start")
    start.add_argument("name")
    start.add_argument("--kernel", choices=[k for g in GUESTS.values() for k in g.kernels], required=True)
    start.add_argument("--port", type=int)
    start.add_argument("--memory", type=int, default=2048)
    start.add_argument("--smp", type=int, default=2)
    for name in ("stop", "reboot", "console"):
        sub.add_parser(name).add_argument("name")
    run = sub.add_parser("run")
    run.add_argument("name")
    run.add_argument("command", nargs="+")
    sub.add_parser("inventory").add_argument("names", nargs="*")
    args = parser.parse_args(argv)
    named = ("stop", "reboot", "run", "console")
    known = args.cmd in named and (RUN_DIR / args.name / "state.json").exists()
    if args.cmd == "stop" and not known:
        return 0  # already gone: destroy stays idempotent
    if args.cmd in named and not known:
        parser.error(f"no VM named {args.name} was started with vmctl.py")

    if args.cmd == "build":
        for guest in GUESTS:
            print(build(guest))
    elif args.cmd == "start":
        if (RUN_DIR / args.name / "state.json").exists() and VM.attach(args.name).alive():
            parser.error(f"VM {args.name} is already running")
        vm = VM(args.kernel, args.name, memory=args.memory, smp=args.smp, port=args.port).start()
        print(json.dumps(vm.host_vars(), indent=2))
    elif args.cmd == "stop":
        VM.attach(args.name).stop()
    elif args.cmd == "reboot":
        VM.attach(args.name).reboot()
    elif args.cmd == "console":
        print(VM.attach(args.name).console(), end="")
    elif args.cmd == "run":
        # One word is a shell command line, several are an argv.
        command = args.command[0] if len(args.command) == 1 else args.command
        proc = VM.attach(args.name).run(command, timeout=3600, text=False)
        sys.stdout.buffer.write(proc.stdout)
        sys.stderr.buffer.write(proc.stderr)
        return proc.returncode
    elif args.cmd == "inventory":
        print(yaml.safe_dump(inventory(_running(args.names)), sort_keys=False), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
