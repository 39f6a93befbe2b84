# SPDX-License-Identifier: GPL-3.0-or-later
"""Real Debian kernels in qemu (TCG), reached over ssh like any managed host.

    with VM("6.1") as vm:                       # boots, waits for sshd
        vm.run("modprobe dummy", check=True)    # CompletedProcess (text)
        res = vm.ansible_tasks([{"kernel.kmod.kmod_load": {"name": "dummy"}}])
        assert res.task("kernel.kmod.kmod_load")["changed"] is False

The root disk is qemu's `snapshot=on` view of the cached image: every start() begins
from the pristine image, writes survive a guest reboot() but not a stop()/start().
Ansible runs on this machine (ansible-playbook, results collected by the kmod_vm_json
callback) and reaches the guest through a loopback port forward; the guest cannot reach
out (restrict=on).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import typing as t
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from images import VM_CACHE, VMImage, image  # (puts tests/ on sys.path)
from collection_link import link_collection  # noqa: E402

HERE = Path(__file__).resolve().parent
# Under TCG on a shared 2-core machine a boot can take minutes when others are busy.
BOOT_TIMEOUT = float(os.environ.get("KMOD_VM_BOOT_TIMEOUT", "420"))
RUN_DIR = VM_CACHE / "run"
SSH_READY = "kmod-vm-init: starting sshd"


def free_port() -> int:
    """A loopback port nobody listens on right now (qemu may still lose a race: start() retries)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """In the qemu child before exec: SIGKILL when the parent exits (PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


@dataclass
class TaskResult:
    """One task's result on one host, as the json callback reports it."""

    play: str
    task: str
    host: str
    result: dict

    def __getitem__(self, key: str) -> t.Any:
        return self.result[key]

    def get(self, key: str, default: t.Any = None) -> t.Any:
        return self.result.get(key, default)


@dataclass
class PlaybookResult:
    """ansible-playbook's exit code, output and per-task results in run order."""

    rc: int
    stdout: str
    stderr: str
    data: dict | None
    tasks: list[TaskResult] = field(default_factory=list)

    @property
    def stats(self) -> dict:
        return (self.data or {}).get("stats", {})

    def task(self, name: str, host: str | None = None) -> TaskResult:
        """The last result of the task called `name` (its name, or the action if unnamed)."""
        for res in reversed(self.tasks):
            if res.task == name and host in (None, res.host):
                return res
        raise KeyError(f"no result for task {name!r}" + (f" on {host}" if host else "")
                       + f"; tasks: {[r.task for r in self.tasks]}\n{self}")

    def __str__(self) -> str:
        lines = [f"ansible-playbook rc={self.rc}"]
        for res in self.tasks:
            state = "failed" if res.get("failed") else "changed" if res.get("changed") else "ok"
            lines.append(f"  [{res.host}] {res.task}: {state} {res.get('msg', '')}".rstrip())
            if res.get("failed") and res.get("module_stderr"):  # a module that crashed
                lines.append(f"    module_stderr: {res['module_stderr'][-1500:]}")
        if self.data is None:
            lines.append(f"stdout: {self.stdout[-2000:]}")
        lines.append(f"stderr: {self.stderr[-2000:]}")
        return "\n".join(lines)


def _parse(rc: int, stdout: str, stderr: str) -> PlaybookResult:
    try:
        data = json.loads(stdout)
    except ValueError:
        return PlaybookResult(rc, stdout, stderr, None)
    tasks = [TaskResult(play["play"]["name"], task["task"]["name"], host, res)
             for play in data.get("plays", []) for task in play.get("tasks", [])
             for host, res in task.get("hosts", {}).items()]
    return PlaybookResult(rc, stdout, stderr, data, tasks)


def inventory(vms: t.Iterable[VM]) -> dict:
    """An Ansible inventory (as data; dump it as YAML or JSON) holding these VMs."""
    return {"all": {"hosts": {vm.name: vm.host_vars() for vm in vms}}}


def ansible_playbook(vms: t.Sequence[VM], playbook: str | Path | list, *,
                     extra_vars: dict | None = None, check: bool = False, diff: bool = False,
                     args: t.Sequence[str] = (), timeout: float = 1800) -> PlaybookResult:
    """Run ansible-playbook here against the VMs; `playbook` is a path, YAML text or a
    list of plays. kernel.kmod.* resolves to this repository. Never raises for a failed
    play: check `.rc` and the task results."""
    with tempfile.TemporaryDirectory(prefix="kmod-vm-play-") as tmpdir:
        tmp = Path(tmpdir)
        if isinstance(playbook, Path) or (isinstance(playbook, str) and "\n" not in playbook):
            book = Path(playbook).resolve()
        else:
            book = tmp / "playbook.yml"
            book.write_text(playbook if isinstance(playbook, str) else yaml.safe_dump(playbook))
        (tmp / "inventory.json").write_text(json.dumps(inventory(vms)))
        (tmp / "extra_vars.json").write_text(json.dumps(extra_vars or {}))
        cmd = ["ansible-playbook", "-i", str(tmp / "inventory.json"),
               "-e", f"@{tmp / 'extra_vars.json'}", *(["--check"] if check else []),
               *(["--diff"] if diff else []), *args, str(book)]
        env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="kmod_vm_json",
                   ANSIBLE_CALLBACK_PLUGINS=str(HERE / "callback_plugins"),
                   ANSIBLE_COLLECTIONS_PATH=link_collection(tmp / "collections"),
                   ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_PIPELINING="True",
                   ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="False",
                   ANSIBLE_LOCAL_TEMP=str(tmp / "ansible-local"))
        # cwd: the temp dir, so that no stray ansible.cfg changes the run.
        proc = subprocess.run(cmd, cwd=tmp, env=env, stdin=subprocess.DEVNULL, check=False,
                              capture_output=True, text=True, timeout=timeout)
        return _parse(proc.returncode, proc.stdout, proc.stderr)


class VM:
    """One qemu guest booting kernel `key`: "6.1" or "6.12" (Debian 12 guest), "trixie"
    (Debian 13 with its 6.12 kernel) or "bullseye" (Debian 11 with its 5.10 kernel)."""

    def __init__(self, key: str, name: str | None = None, *, memory: int = 2048, smp: int = 2,
                 port: int | None = None) -> None:
        self.key = key
        self.name = name or f"vm_{key.replace('.', '_')}"
        self.memory = memory
        self.smp = smp
        self.port = port
        self.image: VMImage | None = None
        self.pid: int | None = None
        self._proc: subprocess.Popen | None = None
        # Named VMs (the CLI) keep their state in the cache so another process can stop them.
        self.named = name is not None
        self.rundir = RUN_DIR / self.name if name else Path(tempfile.mkdtemp(prefix="kmod-vm-"))

    # --- lifecycle -------------------------------------------------------------------

    @property
    def console_log(self) -> Path:
        return self.rundir / "console.log"

    def console(self) -> str:
        """The serial console so far (kernel messages, init output, sshd's log)."""
        try:
            return self.console_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _qemu_cmd(self) -> list[str]:
        img = self.image
        return ["qemu-system-x86_64", "-name", self.name, "-accel", "tcg", "-cpu", "max",
                "-m", str(self.memory), "-smp", str(self.smp),
                "-display", "none", "-monitor", "none", "-serial", f"file:{self.console_log}",
                "-kernel", str(img.kernel), "-initrd", str(img.initrd),
                "-append", "console=ttyS0 quiet panic=-1",
                "-drive", f"file={img.rootfs},if=virtio,format=raw,snapshot=on",
                "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{self.port}-:22",
                "-device", "virtio-net-pci,netdev=n0"]

    def start(self, timeout: float = BOOT_TIMEOUT) -> VM:
        """Boot from the pristine image and wait until ssh answers."""
        self.launch()
        self.wait_ssh(timeout)
        return self

    def launch(self) -> VM:
        """Start qemu on the pristine image without waiting for the boot (wait_ssh() does):
        guests launched one after the other boot side by side."""
        self.image = image(self.key)
        self.rundir.mkdir(parents=True, exist_ok=True)
        fixed_port = self.port is not None
        for attempt in range(3):
            if not fixed_port:
                self.port = free_port()
            self.console_log.unlink(missing_ok=True)
            with open(self.rundir / "qemu.log", "w") as log:
                # Own session: a CLI-started VM outlives the CLI; stop() kills it by pid.
                # A test session's VM dies with its process, even if that is killed.
                self._proc = subprocess.Popen(self._qemu_cmd(), stdin=subprocess.DEVNULL,
                                              stdout=log, stderr=subprocess.STDOUT,
                                              start_new_session=True,
                                              preexec_fn=None if self.named else _die_with_parent)
            self.pid = self._proc.pid
            self._save_state()
            time.sleep(1)
            qemu_log = (self.rundir / "qemu.log").read_text(errors="replace")
            if self._proc.poll() is None or fixed_port or "hostfwd" not in qemu_log:
                break
        return self

    def _save_state(self) -> None:
        state = {"key": self.key, "name": self.name, "pid": self.pid, "port": self.port,
                 "memory": self.memory, "smp": self.smp}
        (self.rundir / "state.json").write_text(json.dumps(state))

    @classmethod
    def attach(cls, name: str) -> VM:
        """The running VM that the CLI started under `name`."""
        state = json.loads((RUN_DIR / name / "state.json").read_text())
        vm = cls(state["key"], name, memory=state["memory"], smp=state["smp"], port=state["port"])
        vm.pid = state["pid"]
        vm.image = image(vm.key)
        return vm

    def alive(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        try:  # attached: make sure the pid is still our qemu, not a reused pid
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, TypeError):
            return False
        return b"qemu-system-x86_64" in cmdline[0] and self.name.encode() in cmdline

    def _fail(self, why: str) -> RuntimeError:
        """Stop the VM and return an error with what qemu and the console said."""
        try:
            qemu_log = (self.rundir / "qemu.log").read_text(errors="replace")[-2000:]
        except FileNotFoundError:
            qemu_log = ""
        error = RuntimeError(f"VM {self.name} ({self.key}): {why}\n--- qemu:\n{qemu_log}\n"
                             f"--- console (tail):\n{self.console()[-4000:]}")
        self.stop()
        return error

    def wait_ssh(self, timeout: float = BOOT_TIMEOUT, since: int = 0) -> None:
        """Wait for sshd; `since`: console offset where this boot's output starts."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise self._fail("qemu exited during boot")
            console = self.console()[since:]
            if "Kernel panic" in console:
                raise self._fail("kernel panic")
            if SSH_READY in console:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    if self.run("true", timeout=30).returncode == 0:
                        return
            if time.monotonic() > deadline:
                raise self._fail(f"no ssh after {timeout:.0f}s")
            time.sleep(1)

    def boot_id(self) -> str:
        return self.run("cat /proc/sys/kernel/random/boot_id", check=True).stdout.strip()

    def reboot(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Reboot the guest (same qemu: disk changes are kept, the kernel state is not)."""
        before = self.boot_id()
        since = len(self.console())
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.run("sync; echo b > /proc/sysrq-trigger", timeout=15)
        self._close_master()
        self.wait_ssh(timeout, since)
        if self.boot_id() == before:
            raise self._fail("reboot did not happen")

    def poweroff(self, timeout: float = 60) -> None:
        """Power the guest off from inside, then make sure qemu is gone."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.run("sync; echo o > /proc/sysrq-trigger", timeout=15)
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.5)
        self.stop()

    def stop(self) -> None:
        """Kill qemu (the snapshot disk goes with it) and forget the run directory."""
        self._close_master()
        if self.pid is not None and self.alive():
            os.kill(self.pid, signal.SIGKILL)
        if self._proc is not None:
            self._proc.wait()
        self._proc = self.pid = None
        shutil.rmtree(self.rundir, ignore_errors=True)

    def restart(self, timeout: float = BOOT_TIMEOUT) -> VM:
        """A fresh VM from the pristine image (a new qemu, unlike reboot())."""
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> VM:
        return self if self.alive() else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- ssh ---------------------------------------------------------------------

    def ssh_options(self) -> list[str]:
        return ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20",
                "-o", "ServerAliveInterval=15", "-o", "IdentitiesOnly=yes"]

    def _control(self) -> list[str]:
        # One master connection per VM: each later ssh call skips the key exchange,
        # which costs about a second of the guest's emulated CPU.
        return ["-o", "ControlMaster=auto", "-o", f"ControlPath={self.rundir}/ssh",
                "-o", "ControlPersist=60"]

    def ssh_command(self, command: str | t.Sequence[str]) -> list[str]:
        """An ssh argv running `command`: a shell line, or an argv (quoted for the guest)."""
        remote = command if isinstance(command, str) else shlex.join(command)
        return ["ssh", "-i", str(self.image.ssh_key), "-p", str(self.port), *self.ssh_options(),
                *self._control(), "root@127.0.0.1", remote]

    def _close_master(self) -> None:
        if (self.rundir / "ssh").exists():
            subprocess.run(["ssh", *self._control(), "-O", "exit", "root@127.0.0.1"],
                           stdin=subprocess.DEVNULL, capture_output=True, check=False)

    def run(self, command: str | t.Sequence[str], *, check: bool = False,
            input: str | bytes | None = None, timeout: float = 600,
            text: bool = True) -> subprocess.CompletedProcess:
        """Run a command in the guest as root; CompletedProcess with its output."""
        if isinstance(input, str) and not text:
            input = input.encode()
        proc = subprocess.run(self.ssh_command(command), input=input, capture_output=True,
                              check=False, text=text, timeout=timeout,
                              stdin=subprocess.DEVNULL if input is None else None)
        if check and proc.returncode != 0:
            raise RuntimeError(f"in VM {self.name}: {command!r} exited {proc.returncode}\n"
                               f"stdout: {proc.stdout}\nstderr: {proc.stderr}")
        return proc

    def put(self, data: bytes | str, path: str, mode: int = 0o644) -> None:
        """Write a file in the guest."""
        quoted = shlex.quote(path)
        self.run(f"cat > {quoted} && chmod {mode:o} {quoted}", input=data,
                 text=isinstance(data, str), check=True)

    # --- ansible ---------------------------------------------------------------------

    def host_vars(self) -> dict:
        """Inventory variables that reach this VM the way Ansible reaches a real host."""
        return {"ansible_host": "127.0.0.1", "ansible_port": self.port, "ansible_user": "root",
                "ansible_ssh_private_key_file": str(self.image.ssh_key),
                "ansible_ssh_common_args": " ".join(self.ssh_options()),
                "ansible_python_interpreter": "/usr/bin/python3", "ansible_pipelining": True,
                "kmod_vm_kernel": self.key, "kmod_vm_release": self.image.release}

    def ansible_playbook(self, playbook: str | Path | list, **kwargs: t.Any) -> PlaybookResult:
        """ansible_playbook() against this VM alone."""
        return ansible_playbook([self], playbook, **kwargs)

    def ansible_tasks(self, tasks: list[dict], **kwargs: t.Any) -> PlaybookResult:
        """Run these tasks in one play on this VM (no fact gathering)."""
        play = {"name": "kmod-vm", "hosts": self.name, "gather_facts": False, "tasks": tasks}
        return self.ansible_playbook([play], **kwargs)
