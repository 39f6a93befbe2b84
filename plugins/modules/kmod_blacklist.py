#!/usr/bin/python
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
author:
  - kernel.kmod developers
extends_documentation_fragment:
  - kernel.kmod.common
  - kernel.kmod.common.attributes
options:
  name:
    description:
      - Module names (not aliases, not file names). C(i2c-dev) and C(i2c_dev) are the same module.
      - Names that are empty or hold whitespace, control characters, C(/), C(\), C(#) or the glob
        characters C(*?[]) are rejected before anything is touched.
      - May be empty with O(exclusive=true), which then removes every entry from O(path).
    type: list
    elements: str
    required: true
  state:
    description:
      - V(present) makes sure the entries exist, V(absent) removes the C(blacklist) line and any
        C(install NAME /bin/false) (or C(/bin/true)) line for the names. Other C(install) commands
        are left alone when removing.
    type: str
    choices: [present, absent]
    default: present
  mode:
    description:
      - V(blacklist) writes C(blacklist NAME). As in C(modprobe), this only stops loading the module
        through an alias (hardware autoloading by udev, C(modprobe ALIAS), C(symbol:) lookups).
        An explicit C(modprobe NAME), and another module that depends on it or names it as a softdep,
        still load it.
      - V(disable) writes C(blacklist NAME) and C(install NAME /bin/false), so that every load through
        C(modprobe) fails, explicit ones and dependency pulls included. Other C(install) lines for the
        module in O(path) are dropped, as libkmod would run the first one it finds.
      - With V(blacklist), an C(install NAME /bin/false) line in O(path) is removed, so that a module can
        be switched between the two modes.
    type: str
    choices: [blacklist, disable]
    default: blacklist
  path:
    description:
      - The C(modprobe.d) file to maintain, taken under O(root). Its name must end in C(.conf), as libkmod
        reads no other files.
    type: path
    default: /etc/modprobe.d/kernel-kmod-blacklist.conf
  exclusive:
    description:
      - With V(true), O(path) holds exactly the listed modules: blacklist and disable entries for every
        other module are removed. Comments and other directives stay. Needs O(state=present).
    type: bool
    default: false
  unload:
    description:
      - With O(state=present), also unload each listed module that is loaded now, like
        M(kernel.kmod.kmod_load) with O(kernel.kmod.kmod_load#module:state=absent), including its
        dependencies that nothing else uses any more.
      - A module in use fails the task with a message naming its holders; nothing is unloaded then.
    type: bool
    default: false
notes:
  - The initramfs may carry a copy of C(modprobe.d); RV(initramfs_stale) tells a handler when to rebuild it.
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

- name: Allow a module again
  kernel.kmod.kmod_blacklist:
    name: floppy
    state: absent
"""

RETURN = r"""
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
        - The engine resolves no alias to this module any more (the whole configuration is taken
          into account, not only O(path)).
      type: bool
      sample: true
    blocked:
      description:
        - The engine's resolution of the name itself ends in a failing C(install) command, so that
          C(modprobe NAME) and dependency pulls fail.
      type: bool
      sample: false
    elsewhere:
      description: Entries for the module in other C(modprobe.d) files, which this module never changes.
      type: list
      elements: dict
      sample: [{file: /usr/lib/modprobe.d/blacklist.conf, directive: blacklist, value: ''}]
    unloaded:
      description: Modules unloaded (or, in check mode, to be unloaded) because of O(unload).
      type: list
      elements: str
      sample: [pcspkr]
removed:
  description: Modules whose entries O(exclusive=true) removed from O(path).
  returned: always
  type: list
  elements: str
  sample: [floppy]
initramfs_stale:
  description:
    - V(true) when O(path) changed and an initramfs for O(kernel_release) exists under C(/boot),
      which may still hold the old C(modprobe.d) configuration.
  returned: always
  type: bool
  sample: true
"""

import os
import typing as t

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kernel.kmod.plugins.module_utils._argspec import argument_spec
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.atomic import read_bytes, write_if_changed
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.config_edit import (
    ModprobeConfEditor, check_module_name, edit_blacklist, module_key)
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.errors import ConfigError, KmodError
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.paths import KmodPaths

# Where the usual initramfs generators put their image (initramfs-tools, dracut, mkinitrd).
INITRAMFS_NAMES = ("initrd.img-{}", "initramfs-{}.img", "initrd-{}", "initrd-{}.img")


def conf_path(paths: KmodPaths, path: str) -> str:
    """The file under root, checked so that libkmod will really read it."""
    name = os.path.basename(path)
    if not os.path.isabs(path) or not name.endswith(".conf") or name.startswith("."):
        raise ConfigError(f"path {path!r} must be an absolute path to a *.conf file not starting "
                          "with '.': libkmod reads no other modprobe.d files", path=path)
    full = paths.under(path)
    if os.path.isdir(full):
        raise ConfigError(f"path {full} is a directory", path=full)
    return full


def initramfs_of(paths: KmodPaths) -> str | None:
    for pattern in INITRAMFS_NAMES:
        candidate = paths.under("boot", pattern.format(paths.kernel_release))
        if os.path.isfile(candidate):
            return candidate
    return None


def _decode(data: bytes | None) -> str | None:
    # surrogateescape keeps bytes that are not UTF-8 exactly as they were.
    return None if data is None else data.decode("utf-8", "surrogateescape")


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def run(params: dict[str, t.Any], check_mode: bool) -> dict[str, t.Any]:
    names = [check_module_name(n) for n in params["name"]]
    paths = KmodPaths.from_params(params)
    path = conf_path(paths, params["path"])
    before = _decode(read_bytes(path))
    after = edit_blacklist(before, names, params["state"], params["mode"], params["exclusive"])
    changed = after != (before or "")
    if changed and not check_mode:
        write_if_changed(path, _encode(after))
    old, new = ModprobeConfEditor(before), ModprobeConfEditor(after)
    return {
        "changed": changed,
        "path": path,
        "modules": [{"name": n,
                     "blacklisted": module_key(n) in new.blacklisted(),
                     "disabled": module_key(n) in new.disabled()} for n in names],
        "removed": [k for k in old.managed() if k not in new.managed()],
        "initramfs_stale": changed and initramfs_of(paths) is not None,
        # Shown text only: bytes that are not UTF-8 become U+FFFD.
        "diff": {"before_header": path, "after_header": path,
                 "before": _encode(before or "").decode("utf-8", "replace"),
                 "after": _encode(after).decode("utf-8", "replace")},
    }


def main() -> t.NoReturn:
    module = AnsibleModule(
        argument_spec=argument_spec(
            name={"type": "list", "elements": "str", "required": True},
            state={"type": "str", "choices": ["present", "absent"], "default": "present"},
            mode={"type": "str", "choices": ["blacklist", "disable"], "default": "blacklist"},
            path={"type": "path", "default": "/etc/modprobe.d/kernel-kmod-blacklist.conf"},
            exclusive={"type": "bool", "default": False},
            unload={"type": "bool", "default": False},
        ),
        supports_check_mode=True,
    )
    try:
        result = run(module.params, module.check_mode)
    except KmodError as e:
        module.fail_json(msg=e.msg, **e.details)
    if not module._diff:
        del result["diff"]
    module.exit_json(**result)


if __name__ == "__main__":
    main()
