#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: kmod_blacklist
short_description: Blacklist or disable kernel modules in a modprobe.d file
version_added: 0.1.0
description:
  - Adds or removes C(blacklist NAME) lines, and with O(mode=disable) also C(install NAME /bin/false)
    lines, in one C(modprobe.d) file that this module owns (O(path)).
  - Comments and unrelated lines of that file are kept in place; existing equivalent lines are
    recognised the way libkmod reads them (C(-) and C(_) are the same in names, C(\) continues a line).
  - The file is written atomically, and only when its content changes. Other C(modprobe.d) files are
    never changed; entries for the same modules found there are reported in RV(modules[].elsewhere).
  - After the change, the module resolves each name with its own engine (the way C(modprobe) does)
    and reports whether loading is now stopped (RV(modules[].alias_blocked), RV(modules[].blocked)).
    In check mode this is computed for the file as it would be written.
  - A warning is given when O(path) is not read by libkmod at all (outside the C(modprobe.d)
    directories, or hidden by a file of the same name in an earlier directory such as C(/etc/modprobe.d)).
author:
  - kernel.kmod developers (!UNKNOWN)
extends_documentation_fragment:
  - kernel.kmod._common
  - kernel.kmod._common.attributes
  - kernel.kmod._common.actiongroup_kmod
options:
  name:
    description:
      - Module names (not aliases, not file names). C(i2c-dev) and C(i2c_dev) are the same module.
      - Names hold only ASCII letters, digits, C(_) and C(-), as every module name does; anything else
        (whitespace, control characters, C(/), C(\), C(#), the glob characters C(*?[]), non-ASCII) is
        rejected before anything is touched.
      - May be empty with O(exclusive=true), which then removes every entry from O(path).
    type: list
    elements: str
    required: true
  state:
    description:
      - V(present) makes sure the entries exist, V(absent) removes the C(blacklist) line, any
        C(install NAME /bin/false) (or C(/bin/true)) line and any C(softdep NAME pre:) line that names
        no module. Other C(install) commands and real softdeps are left alone when removing.
    type: str
    choices: [present, absent]
    default: present
  mode:
    description:
      - V(blacklist) writes C(blacklist NAME). As in C(modprobe), this only stops loading the module
        through an alias (hardware autoloading by udev, C(modprobe ALIAS), C(symbol:) lookups).
        An explicit C(modprobe NAME), and another module that depends on it or names it as a softdep,
        still load it.
      - V(disable) writes C(blacklist NAME), C(install NAME /bin/false) and C(softdep NAME pre:), so that
        every load through C(modprobe) fails, explicit ones and dependency pulls included (the
        dependencies of the module itself are still loaded first, as C(modprobe) does).
        libkmod never runs the install command of a module that has softdeps, and many have some in
        C(modules.softdep) (for example C(libcrc32c)); the empty C(softdep) line takes their place because
        libkmod uses the first C(softdep) line it finds, in file name order. A file that sorts after
        C(modules.softdep) therefore cannot disable such a module, as RV(modules[].blocked) then shows.
      - Other C(install) and C(softdep) lines for the module in O(path) are dropped with V(disable),
        as libkmod would use the first one it finds.
      - With V(blacklist), the C(install NAME /bin/false) and empty C(softdep) lines in O(path) are
        removed, so that a module can be switched between the two modes.
    type: str
    choices: [blacklist, disable]
    default: blacklist
  path:
    description:
      - The C(modprobe.d) file to maintain, taken under O(root). Its name must end in C(.conf), as libkmod
        reads no other files.
      - With O(root) other than C(/), symlinks on the way are followed inside O(root) only, and the file itself
        must not be a symlink (it is refused, rather than written through or replaced).
    type: path
    default: /etc/modprobe.d/kernel-kmod-blacklist.conf
  exclusive:
    description:
      - With V(true), O(path) holds exactly the listed modules; blacklist and disable entries for every
        other module are removed. Comments and other directives stay. Needs O(state=present).
      - O(name) may then be an empty list, which removes every entry.
    type: bool
    default: false
  unload:
    description:
      - With O(state=present), also unload each listed module that is loaded now, like
        M(kernel.kmod.kmod_load) with O(kernel.kmod.kmod_load#module:state=absent), including its
        dependencies that nothing else uses any more.
      - A module in use fails the task with a message naming its holders and refcount; neither the file
        nor any module is changed then.
      - The file is written before modules are unloaded, so that nothing loads them again in between.
    type: bool
    default: false
  on_impact:
    description:
      - What to do, with O(state=present), when present devices need a listed module (see RV(impact)).
        V(warn) reports them in a warning, V(fail) refuses before anything is changed (check mode
        too) when a module drives a present device now (or, with O(mode=disable), is a dependency of
        the module that does), or when the device holds the root filesystem, the boot disk or the
        default route's interface. Devices for which a listed module is merely the only candidate only
        ever warn, unless they are one of those.
      - The devices holding the root filesystem, the boot disk and the default route's interface are
        always named as such in the message.
    type: str
    choices: [warn, fail]
    default: warn
notes:
  - The initramfs may carry a copy of C(modprobe.d); RV(initramfs_stale) tells a handler when to rebuild it.
  - C(modprobe.blacklist=) on the kernel command line (C(/proc/cmdline) under O(root)) counts as a
    blacklist entry elsewhere.
seealso:
  - module: kernel.kmod.kmod_load
  - module: kernel.kmod.kmod_facts
"""

EXAMPLES = r"""
- name: Stop udev from autoloading the PC speaker driver
  kernel.kmod.kmod_blacklist:
    name: pcspkr

- name: Make sure some filesystems can never be loaded, and unload them now
  kernel.kmod.kmod_blacklist:
    name: [cramfs, freevxfs, jffs2, hfs, hfsplus, udf]
    mode: disable
    path: /etc/modprobe.d/cis-filesystems.conf
    unload: true
  notify: Rebuild initramfs

- name: The file holds exactly these modules, nothing else
  kernel.kmod.kmod_blacklist:
    name: [nouveau, floppy]
    exclusive: true

- name: Disable USB storage, but never on a host that boots from it
  kernel.kmod.kmod_blacklist:
    name: usb-storage
    mode: disable
    on_impact: fail

- name: Allow a module again
  kernel.kmod.kmod_blacklist:
    name: floppy
    state: absent
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
path:
  description: The file that was maintained (under O(root)).
  returned: always
  type: str
  sample: /etc/modprobe.d/kernel-kmod-blacklist.conf
modules:
  description: One entry per name in O(name), in that order, as it stands after the task.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The name as given.
      type: str
      sample: i2c-dev
    blacklisted:
      description: O(path) holds a C(blacklist) line for the module.
      type: bool
      sample: true
    disabled:
      description: O(path) holds an C(install NAME /bin/false) line for the module.
      type: bool
      sample: false
    alias_blocked:
      description:
        - The module is blacklisted by the whole configuration (not only O(path)), and resolving each
          of its aliases (from C(modules.alias) and C(alias) lines) the way C(modprobe) does yields it
          only as a skipped result.
      type: bool
      sample: true
    blocked:
      description:
        - Resolving the name itself the way C(modprobe NAME) does ends, for every result, in an
          C(install) command that only runs C(false) or C(true), so the module is never inserted, also not
          as another module's dependency. V(false) for O(mode=blacklist), which does not stop that.
      type: bool
      sample: false
    elsewhere:
      description:
        - C(blacklist) and C(install) entries for the module in other files (and the kernel command
          line), which this module never changes. C(install) patterns are matched like libkmod does.
      type: list
      elements: dict
      sample: [{file: /usr/lib/modprobe.d/blacklist.conf, line: 3, directive: blacklist pcspkr}]
    unloaded:
      description: Modules unloaded (or, in check mode, to be unloaded) because of O(unload).
      type: list
      elements: str
      sample: [pcspkr]
removed:
  description: Modules (normalised names) that had an entry in O(path) before and have none now.
  returned: always
  type: list
  elements: str
  sample: [floppy]
impact:
  description:
    - Present devices that the listed modules drive now, or that nothing drives and for which they are
      the only candidates (C(modprobe --resolve-alias) of the device's C(modalias)), computed from sysfs
      before anything changes; empty with O(state=absent) and when O(root) is not C(/) (another system's
      configuration).
    - C(device) (its sysfs path), C(bus), C(modalias), C(driver) (bound now), C(module) (the listed
      module concerned), C(reason) (V(driven) when that module drives it now; V(dependency) when, with
      O(mode=disable), the bound driver's module needs it; V(only_candidate) when nothing drives it and no
      other module would be autoloaded for it), C(critical) (what it holds among the root filesystem,
      the boot disk and the default route's interface).
  returned: always
  type: list
  elements: dict
  sample: [{device: "/sys/devices/pci0000:00/0000:00:04.0/virtio1", bus: virtio, modalias: "virtio:d00000002v00001AF4",
            driver: virtio_blk, module: virtio_blk, reason: driven, critical: ["root filesystem (/)", boot disk (vda)]}]
initramfs_stale:
  description:
    - V(true) when O(path) changed and an initramfs for O(kernel_release) exists under C(/boot),
      which may still hold the old C(modprobe.d) configuration.
  returned: always
  type: bool
  sample: true
"""

import typing as t

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kernel.kmod.plugins.module_utils._argspec import argument_spec
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.blacklist import apply, plan_blacklist, verify
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.errors import KmodError
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.execute import shell_runner
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.generation import detect_generation
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.impact import blacklist_impact
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.impact import message as impact_message
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.loader import LinuxSyscalls
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.paths import KmodPaths


def main() -> None:  # (exit_json and fail_json end it; AnsibleModule has no types)
    module = AnsibleModule(
        argument_spec=argument_spec(
            name={"type": "list", "elements": "str", "required": True},
            state={"type": "str", "choices": ["present", "absent"], "default": "present"},
            mode={"type": "str", "choices": ["blacklist", "disable"], "default": "blacklist"},
            path={"type": "path", "default": "/etc/modprobe.d/kernel-kmod-blacklist.conf"},
            exclusive={"type": "bool", "default": False},
            unload={"type": "bool", "default": False},
            on_impact={"type": "str", "choices": ["warn", "fail"], "default": "warn"},
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        paths = KmodPaths.from_params(p)
        plan = plan_blacklist(paths, p["name"], p["state"], p["mode"], p["path"], p["exclusive"], p["unload"])
        impacts, impact_warnings = blacklist_impact(paths, p["name"] if p["state"] == "present" else [], p["mode"])
        if p["on_impact"] == "fail" and any(i.blocking for i in impacts):
            module.fail_json(msg=impact_message(impacts, refused=True), impact=[i.as_dict() for i in impacts])
        if not module.check_mode:
            apply(plan, LinuxSyscalls(), shell_runner(module.run_command))
        modules = verify(plan)
        generation = detect_generation(paths).as_result()
    except KmodError as e:
        module.fail_json(msg=e.msg, **e.details)
    for warning in plan.warnings + impact_warnings + ([impact_message(impacts, refused=False)] if impacts else []):
        module.warn(warning)
    result: dict[str, t.Any] = {
        "changed": plan.changed,
        "path": plan.path,
        "modules": modules,
        "removed": plan.removed(),
        "initramfs_stale": plan.file_changed and plan.initramfs() is not None,
        "impact": [i.as_dict() for i in impacts],
        "kmod_generation": generation,
    }
    if module._diff:
        result["diff"] = plan.diff()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
