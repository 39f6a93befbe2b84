# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: fleet_report
short_description: Build the fleet report of kernel modules from many hosts' kmod_facts
version_added: 0.1.0
description:
  - Takes C(hostvars) and a list of hosts whose C(ansible_facts.kmod) came from M(kernel.kmod.kmod_facts)
    (subsets V(loaded) and V(config); V(devices) for the device tables) and returns the figures of the
    fleet report, ready for C(to_nice_json) and for P(kernel.kmod.fleet_report_html#filter).
  - Modules loaded although blacklisted or disabled (C(install NAME /bin/false) or C(true)) in the host's
    C(modprobe.d); modules loaded on only a few hosts (drift); and, where the role's desired lists are set
    (C(kmod_report_desired), set by the role, or the variables C(kmod_modules_present),
    C(kmod_modules_absent), C(kmod_blacklist), C(kmod_disable)), the modules whose state differs.
  - Hosts are sorted worst first (most problems), then by name; a host without facts counts as a problem.
author:
  - kernel.kmod developers (!UNKNOWN)
options:
  _input:
    description: C(hostvars).
    type: dict
    required: true
  hosts:
    description: The hosts to report on, for example C(ansible_play_hosts_all).
    type: list
    elements: str
    required: true
  drift_share:
    description: A module loaded on at most this share of the hosts with facts, but not on all, is drift.
    type: float
    default: 0.5
"""

EXAMPLES = r"""
- name: Write the fleet report as JSON
  ansible.builtin.copy:
    content: "{{ hostvars | kernel.kmod.fleet_report(ansible_play_hosts_all) | to_nice_json }}"
    dest: /tmp/kmod-report.json
    mode: "0644"
  run_once: true
  delegate_to: localhost
"""

RETURN = r"""
_value:
  description:
    - C(summary) (counts), C(hosts) (worst first; each with C(host), C(facts), C(kernel_release), C(loaded),
      C(loaded_blocked) (C(module), C(how), C(file), C(line)), C(desired_unmet) (C(module), C(wanted),
      C(variable), C(loaded)), C(devices), C(problems)), C(loaded_blocked) (module -> host -> V(blacklisted)
      or V(disabled)), C(drift) (C(module), C(count), C(hosts)) and C(drift_share).
  type: dict
"""

import typing as t

from ansible_collections.kernel.kmod.plugins.plugin_utils._fleet_report import DRIFT_SHARE, build_report


def fleet_report(hostvars: t.Mapping[str, t.Any], hosts: t.Sequence[str],
                 drift_share: float = DRIFT_SHARE) -> dict[str, t.Any]:
    return build_report(hostvars, hosts, float(drift_share))


class FilterModule:
    def filters(self) -> dict[str, t.Callable[..., t.Any]]:
        return {"fleet_report": fleet_report}
