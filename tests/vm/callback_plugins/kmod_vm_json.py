# SPDX-License-Identifier: GPL-3.0-or-later
"""Stdout callback for the VM tests: every task result, complete, as one JSON document.

ansible-core no longer ships a json callback (it moved to ansible.posix), and the
default abridging drops the keys tests assert on (diff, warnings), so results are
kept whole apart from Ansible's internal keys.
"""

from __future__ import annotations

import json

from ansible.plugins.callback import CallbackBase
from ansible.vars.clean import module_response_deepcopy, strip_internal_keys

DOCUMENTATION = """
    name: kmod_vm_json
    type: stdout
    short_description: All task results as one JSON document (tests only)
    description:
      - "Prints one JSON object: C(plays) (each with C(play.name) and C(tasks), each task with
        C(task.name), C(task.action) and C(hosts) mapping host to result) and C(stats)."
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "kmod_vm_json"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.plays: list[dict] = []

    def v2_playbook_on_play_start(self, play) -> None:
        self.plays.append({"play": {"name": play.get_name()}, "tasks": []})

    def v2_playbook_on_task_start(self, task, is_conditional: bool = False) -> None:
        self.plays[-1]["tasks"].append(
            {"task": {"name": task.get_name(), "action": task.action}, "hosts": {}})

    def v2_playbook_on_handler_task_start(self, task) -> None:
        self.v2_playbook_on_task_start(task)

    def _record(self, result, **extra) -> None:
        data = strip_internal_keys(module_response_deepcopy(result.result))
        data.update(extra)
        self.plays[-1]["tasks"][-1]["hosts"][result.host.get_name()] = data

    def v2_runner_on_ok(self, result) -> None:
        self._record(result)

    def v2_runner_on_failed(self, result, ignore_errors: bool = False) -> None:
        self._record(result, failed=True, ignore_errors=ignore_errors)

    def v2_runner_on_skipped(self, result) -> None:
        self._record(result, skipped=True)

    def v2_runner_on_unreachable(self, result) -> None:
        self._record(result, unreachable=True)

    def v2_playbook_on_stats(self, stats) -> None:
        summary = {host: stats.summarize(host) for host in sorted(stats.processed)}
        self._display.display(json.dumps({"plays": self.plays, "stats": summary}, default=str))
