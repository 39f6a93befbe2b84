#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: kmod_load
short_description: Load and unload kernel modules like modprobe, with their dependencies
version_added: 0.1.0
description:
  - Loads kernel modules with their dependencies and softdeps, or removes them together with the
    dependencies nobody uses any more, resolving names exactly as C(modprobe) does (module names,
    aliases, C(symbol:) names, builtin modules, C(install) and C(remove) commands from C(modprobe.d)).
  - The whole list is resolved in one pass with the module indexes opened once, so long lists are cheap.
  - Modules are inserted with C(finit_module) (the kernel decompresses the file where
    C(/sys/module/compression) allows it), else decompressed here and passed to C(init_module).
author:
  - kernel.kmod developers (!UNKNOWN)
extends_documentation_fragment:
  - kernel.kmod._common
  - kernel.kmod._common.attributes
  - kernel.kmod._common.actiongroup_kmod
options:
  name:
    description:
      - Module name, alias (for example C(devname:vfio/vfio) or C(symbol:nf_nat_setup_info)), or a list of them.
      - List order is load order.
      - An absolute path to a C(.ko), C(.ko.xz), C(.ko.zst) or C(.ko.gz) file loads that file alone, like
        C(insmod). Its dependencies must already be loaded; if they are not, the task fails before
        loading anything and names the modules that export the missing symbols.
      - Names that are empty or hold whitespace or control characters are rejected before anything is touched.
    type: raw
    required: true
  state:
    description:
      - V(present) loads the modules with their dependencies; builtin or already loaded modules are
        left as they are.
      - V(absent) removes the modules, then every module of their dependency closure (C(modules.dep)) and
        softdeps whose reference count dropped to 0, dependents first. A module in use fails the task
        and nothing is removed; a builtin module cannot be removed.
    type: str
    choices: [present, absent]
    default: present
  params:
    description:
      - Module parameters for O(name), as one string (C(numdummies=2 foo="a b")) or a dict.
      - In a dict, booleans become C(1)/C(0), lists become comma-separated arrays, V(null) gives a bare C(key).
        A value with blanks is quoted (C(key="a b")).
      - The kernel splits the string at blanks outside double quotes and has no escapes, so what it cannot
        take back exactly as asked is refused before anything is touched (control characters such as newline or tab,
        ...), Unicode line separators, a double quote inside a value, unbalanced quotes, a word that is not
        a parameter name (letters, digits, C(_), C(.), C(-)), a list item with a comma).
      - They are added to the C(options) from C(modprobe.d), like C(modprobe NAME PARAMS).
      - If the module is already loaded with other values (as far as C(/sys/module/NAME/parameters)
        shows them), RV(modules[].params_mismatch) reports it; O(reload=true) applies them.
        Parameters the module does not show there are listed in RV(modules[].params_unverified), with a
        warning only when this run loads the module with them (a rerun that changes nothing does not warn).
      - After loading (or reloading) the module, its parameters are read back. A module may keep another
        value than the one given (C(loop) rounds C(max_part=4) up to V(7)); such values are reported in
        RV(modules[].params_normalized) with a warning, and are what the kernel uses. Ask for the value the
        kernel shows to make the warning go away.
      - So that O(reload=true) does not reload such a module on every run, what the kernel showed is
        recorded in C(/run/kernel.kmod/params.json) (gone at reboot). While the loaded module shows exactly
        what our last load with the same O(params) showed, a reload would change nothing and is not done.
        A module loaded with these O(params) by someone else (at boot, from C(modprobe.d)) is reloaded once.
      - Needs exactly one O(name).
    type: raw
  reload:
    description:
      - Unload and load again a loaded module whose parameters differ from O(params); values the module is
        known to normalize (RV(modules[].params_normalized)) do not count as different.
    type: bool
    default: false
  persistent:
    description:
      - V(present) writes C(/etc/modules-load.d/MODULE.conf) so the module loads at boot, and with O(params)
        an C(options MODULE PARAMS) line in C(/etc/modprobe.d/MODULE.conf) (other lines there are kept).
      - V(absent) removes the module from those files, and a file that holds nothing else.
      - Not set, the files are left as they are.
    type: str
    choices: [present, absent]
notes:
  - In check mode nothing is loaded; the result tells what would be. Modules that a removal frees in ways
    the kernel does not show as holders (for example a crypto driver used by the removed module) are only
    found and removed in a real run.
  - A module file whose name differs from the name the kernel registers (a dkms C(nvidia-current.ko)
    loading as C(nvidia), a copy C(extra/e2edummy.ko) of C(dummy.ko) loading as C(dummy)) is handled by
    the kernel name; RV(modules[].kernel_name) shows it. For that the file of each requested module
    that is not loaded under its file name is read (decompressed) while planning.
  - If the kernel already has a module of the name being inserted (it answers C(EEXIST), for example
    after a load by someone else in between), the module counts as already loaded, as for C(modprobe).
seealso:
  - module: kernel.kmod.kmod_blacklist
  - module: kernel.kmod.kmod_facts
"""

EXAMPLES = r"""
- name: Load nf_nat and its dependencies
  kernel.kmod.kmod_load:
    name: nf_nat

- name: Load modules in this order
  kernel.kmod.kmod_load:
    name: [br_netfilter, overlay, vfio-pci]

- name: Load dummy with parameters, now and at every boot, reloading it if needed
  kernel.kmod.kmod_load:
    name: dummy
    params:
      numdummies: 2
    reload: true
    persistent: present

- name: Remove nf_nat and the dependencies nothing else uses
  kernel.kmod.kmod_load:
    name: nf_nat
    state: absent

- name: Load an out-of-tree module file, like insmod
  kernel.kmod.kmod_load:
    name: /opt/drivers/foo.ko.xz
"""

RETURN = r"""
kmod_generation:
  description: The kmod release whose behaviour was followed, and how it was chosen (see O(kmod_compat)).
  returned: always
  type: dict
  contains:
    version:
      description: kmod major version imitated (28 to 34).
      type: int
      sample: 34
    source:
      description: V(option), V(dpkg), V(libkmod), V(index) (the existing C(modules.dep.bin)), V(host) or V(default).
      type: str
      sample: dpkg
    evidence:
      description: The file or value that decided it.
      type: str
      sample: "/var/lib/dpkg/status: kmod 34"
moddir:
  description:
    - The module directory names were resolved in, C(lib/modules/RELEASE) under O(root), or
      C(usr/lib/modules/RELEASE) when only that exists.
  returned: always
  type: str
  sample: /lib/modules/6.1.0-56-amd64
modules:
  description: One entry per requested name, in request order.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The name as requested.
      type: str
      sample: nf_nat
    module:
      description: The module the name resolved to (file name in C(modules.dep)); null if none.
      type: str
      sample: nvidia_current
    kernel_name:
      description: The name the kernel knows the module by (C(.gnu.linkonce.this_module)).
      type: str
      sample: nvidia
    resolved:
      description: Every module the name resolved to (an alias may resolve to several).
      type: list
      elements: str
      sample: [nf_nat]
    show_depends:
      description: Exactly the lines C(modprobe --show-depends NAME PARAMS) prints.
      type: list
      elements: str
      sample: ["insmod /lib/modules/6.1.0-56-amd64/kernel/lib/libcrc32c.ko ",
               "insmod /lib/modules/6.1.0-56-amd64/kernel/net/netfilter/nf_nat.ko "]
    action:
      description:
        - What was (or in check mode would be) done. V(loaded), V(already_loaded), V(builtin),
          V(removed), V(absent) (was not loaded), or V(blacklisted) (only reachable through an alias
          that C(modprobe.d) blacklists, so C(modprobe) loads nothing either).
      type: str
      sample: loaded
    inserted:
      description:
        - Modules inserted (or install commands run) for this name, in order, by the name the kernel knows
          them by where their file was read, else by file name.
      type: list
      elements: str
      sample: [libcrc32c, nf_conntrack, nf_nat]
    removed:
      description: Modules removed for this name, in order.
      type: list
      elements: str
      sample: [nf_nat, nf_conntrack, nf_defrag_ipv4, libcrc32c]
    commands:
      description: C(install)/C(remove) commands from C(modprobe.d) run instead of inserting or removing.
      type: list
      elements: str
      sample: ["/sbin/modprobe --ignore-install foo"]
    params_mismatch:
      description:
        - Requested parameters that the already loaded module showed with another value before this run
          (values it is known to normalize are in RV(modules[].params_normalized) instead).
      type: dict
      sample: {max_part: {requested: "8", loaded: "16"}}
    params_normalized:
      description:
        - Requested parameters that the module, loaded with them, shows with another value (it rounded or
          clamped the value), with both values. The kernel uses the loaded value; asking for it converges.
        - Reported right after a load or reload, and on later runs while the module still shows that value.
      type: dict
      sample: {max_part: {requested: "4", loaded: "7"}}
    params_unverified:
      description:
        - Requested parameters of an already loaded module that C(/sys/module/NAME/parameters) does not
          show (the module made them unreadable), so they cannot be compared and O(reload) ignores them.
      type: list
      elements: str
      sample: [numdummies]
    params_overridden:
      description:
        - With O(persistent=present), the requested parameters that a later C(options) line sets again
          (a C(modprobe.d) file whose name sorts after ours, or the kernel command line), by parameter,
          with that line's C(file:line). The kernel keeps the last value, so ours would not hold at boot.
      type: dict
      sample: {numdummies: "/usr/lib/modprobe.d/systemd.conf:20"}
    files:
      description: Files written or removed because of O(persistent).
      type: list
      elements: str
      sample: [/etc/modules-load.d/dummy.conf]
"""

import typing as t

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kernel.kmod.plugins.module_utils._argspec import argument_spec
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.errors import KmodError
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.execute import execute, shell_runner
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.generation import detect_generation
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.kparams import check_text
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.loader import LinuxSyscalls
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.paths import KmodPaths
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.plan import Planner, format_params


def _names(value: t.Any) -> list[str]:
    names = value if isinstance(value, list) else [value]
    if not names:
        raise KmodError("name must hold at least one module name")
    for name in names:
        check_text(name, "name", "module name")  # no control, surrogate or line-separator character
    return names


def _params(value: t.Any) -> str | None:
    if value is None or isinstance(value, (str, dict)):
        return format_params(value)
    # apart from the message: validate-modules (ansible-core 2.16) reads its words as a type comparison
    kind = type(value).__name__
    raise KmodError(f"params must be a string or a dict, not {kind}")


def main() -> None:  # (exit_json and fail_json end it; AnsibleModule has no types)
    module = AnsibleModule(
        argument_spec=argument_spec(
            name={"type": "raw", "required": True},
            state={"type": "str", "choices": ["present", "absent"], "default": "present"},
            params={"type": "raw"},
            reload={"type": "bool", "default": False},
            persistent={"type": "str", "choices": ["present", "absent"]},
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        names, params = _names(p["name"]), _params(p["params"])  # refused before anything is read
        paths = KmodPaths.from_params(p)
        plan = Planner(paths).plan(names, p["state"], params, p["reload"], p["persistent"])
        if not module.check_mode:
            execute(plan, LinuxSyscalls(), shell_runner(module.run_command))
        generation = detect_generation(paths).as_result()
    except KmodError as e:
        module.fail_json(msg=e.msg, **e.details)
    for warning in plan.warnings:
        module.warn(warning)
    result: dict[str, t.Any] = {"changed": plan.changed, "moddir": plan.moddir,
                                "modules": [r.as_dict() for r in plan.results], "kmod_generation": generation}
    if module._diff:
        result["diff"] = plan.diff
    # The tree's indexes and caches go before exit_json copies and encodes the result: the
    # peak memory of a run over thousands of names is then the result's, not both.
    del plan  # and with it the planner
    module.exit_json(**result)


if __name__ == "__main__":
    main()
