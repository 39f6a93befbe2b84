# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: fleet_report_html
short_description: Render the kernel.kmod fleet report as one self-contained HTML page
version_added: 0.1.0
description:
  - Renders the output of P(kernel.kmod.fleet_report#filter) as one HTML page with inline CSS, no scripts
    and no links, readable offline; problems are coloured, hosts sorted worst first.
  - Everything that comes from hosts is HTML-escaped.
author:
  - kernel.kmod developers (!UNKNOWN)
options:
  _input:
    description: The report from P(kernel.kmod.fleet_report#filter).
    type: dict
    required: true
  title:
    description: The page's title.
    type: str
    default: kernel.kmod fleet report
"""

EXAMPLES = r"""
- name: Write the fleet report as HTML
  ansible.builtin.copy:
    content: "{{ hostvars | kernel.kmod.fleet_report(ansible_play_hosts_all) | kernel.kmod.fleet_report_html }}"
    dest: /tmp/kmod-report.html
    mode: "0644"
  run_once: true
  delegate_to: localhost
"""

RETURN = r"""
_value:
  description: The HTML page.
  type: str
"""

import typing as t

from ansible_collections.kernel.kmod.plugins.plugin_utils._fleet_report import render_html


def fleet_report_html(report: t.Mapping[str, t.Any], title: str = "kernel.kmod fleet report") -> str:
    return render_html(report, title)


class FilterModule:
    def filters(self) -> dict[str, t.Callable[..., t.Any]]:
        return {"fleet_report_html": fleet_report_html}
