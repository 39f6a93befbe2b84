#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: kmod_depmod
short_description: Regenerate the module indexes of a kernel (modules.dep and friends), like depmod
version_added: 0.1.0
description:
  - Reads every module of a kernel's module tree (C(.ko), C(.ko.gz), C(.ko.xz), C(.ko.zst)) and writes
    the files the target's C(depmod) writes (C(modules.dep), C(modules.dep.bin), C(modules.alias),
    C(modules.alias.bin), C(modules.softdep), C(modules.weakdep) with kmod 33 and later, C(modules.symbols),
    C(modules.symbols.bin), C(modules.builtin.bin), C(modules.builtin.alias.bin) and C(modules.devname)),
    with the same bytes as C(depmod -b ROOT RELEASE) of kmod 30 (Debian 12) or kmod 34 (Debian 13), as
    O(kmod_compat) selects.
  - A file is only written when its bytes change, atomically (temporary file, C(fsync), rename); files
    that are already right are never touched, so the task is idempotent.
  - Runs on one module directory publish one after another (an exclusive C(flock) on the directory).
    Temporary files that a run killed while writing left in the module directory (C(.kmod-*)) are
    removed by the next run, which reports them in a warning and as a change.
  - An index file that is not a regular file (a directory, a symlink, a FIFO) is not replaced; the task
    fails naming it. Inputs (C(modules.order), C(modules.builtin), C(modules.builtin.modinfo),
    O(system_map), O(symvers)) that are directories, FIFOs or symlink loops fail the task too;
    non-regular files in C(depmod.d) are skipped with a warning.
  - Everything is computed before anything is written. Dependency cycles fail the task and nothing is
    written, like C(depmod). A module file that cannot be read (corrupt, truncated, empty, bad
    compression) gives a warning naming it and is listed without dependencies, like C(depmod) does.
  - Modules are read in parallel on all CPUs. Parsed modules, and a fingerprint of all inputs, are
    remembered in a cache (see O(cache)), so that a run where nothing changed reads no module at all.
author:
  - kernel.kmod developers (!UNKNOWN)
extends_documentation_fragment:
  - kernel.kmod._common
  - kernel.kmod._common.attributes
  - kernel.kmod._common.actiongroup_kmod
options:
  config_dirs:
    description:
      - C(depmod.d) directories (or single files) to read, taken under O(root). Files are merged by
        name and an earlier directory wins, as in C(depmod -C).
      - The default is the standard list C(/etc/depmod.d), C(/run/depmod.d), C(/usr/local/lib/depmod.d),
        C(/usr/lib/depmod.d) and C(/lib/depmod.d) under O(root). Unlike C(depmod -b), configuration is
        taken from the O(root) tree, so that an alternate root is self-contained.
      - The directives C(search) (with C(built-in) and C(external)), C(override), C(external) and
        C(exclude) are supported; without any C(search) line, C(updates) comes first, as in kmod.
      - C(external) directories are used as written (not under O(root)), as kmod does.
    type: list
    elements: path
  system_map:
    description:
      - A C(System.map) file (under O(root)) that lists the kernel's own exported symbols, like C(depmod -F).
      - Only used to find unresolved symbols (O(check_unresolved)).
    type: path
  symvers:
    description:
      - A C(Module.symvers) file (under O(root)) with the kernel's symbols and their CRCs, like C(depmod -E).
        It takes precedence over O(system_map), and also reports CRC mismatches as warnings.
    type: path
  check_unresolved:
    description:
      - Report undefined symbols that neither the kernel nor any module provides, like C(depmod -e),
        in RV(unresolved).
      - Needs the kernel's symbols. Without O(system_map) and O(symvers),
        C(/boot/System.map-RELEASE) under O(root) is used; the task fails if it does not exist.
    type: bool
    default: false
  cache:
    description:
      - Remember what was read from each module file in O(cache_dir), so that a run where only a few
        modules changed only reads those, and a run where nothing changed reads none.
      - A module's entry is only reused when the file's path, size, modification time, change time,
        inode and device are all the same. A whole run is only skipped when, in addition, the options,
        the kmod generation and the C(depmod.d) configuration are the same, every directory walked,
        C(modules.order), C(modules.builtin), C(modules.builtin.modinfo), O(system_map) and O(symvers)
        have the same size, modification time, change time, inode and device, the module directory
        holds the same subdirectories and modules, and every index file on disk still has the bytes
        that were written. A stale entry is therefore never used.
      - A cache file is only trusted when the user running the task owns it and nobody else can write it.
      - Check mode uses the cache but never writes it.
    type: bool
    default: true
  cache_dir:
    description:
      - Directory for the cache, on the managed node (not under O(root)). One file per module tree;
        the files of the 8 most recently indexed trees are kept, older ones are removed.
    type: path
    default: /var/cache/kernel-kmod
  jobs:
    description:
      - Number of processes that read modules. V(0) means one per usable CPU.
    type: int
    default: 0
notes:
  - kmod_depmod writes the kmod 30 (Debian 12) index layout. Newer kmod reads it as well.
  - Modules compressed with gzip are indexed too, as a kmod built with zlib support does; Debian's
    kmod 30 is built without it and ignores C(.ko.gz) files.
seealso:
  - module: kernel.kmod.kmod_load
  - module: kernel.kmod.kmod_facts
"""

EXAMPLES = r"""
- name: Rebuild the indexes of the running kernel after installing an out-of-tree module
  kernel.kmod.kmod_depmod:

- name: Rebuild the indexes of another kernel in an image being built
  kernel.kmod.kmod_depmod:
    root: /srv/images/rootfs
    kernel_release: 6.1.0-56-amd64

- name: Fail when some module needs a symbol nothing provides
  kernel.kmod.kmod_depmod:
    kernel_release: 6.12.117+deb12-amd64
    check_unresolved: true
  register: depmod
  failed_when: depmod.unresolved | length > 0
"""

RETURN = r"""
files_changed:
  description: The index files whose content changed (in check mode, which would change), by name.
  returned: always
  type: list
  elements: str
  sample: [modules.dep, modules.dep.bin, modules.alias, modules.alias.bin]
module_count:
  description: Number of modules in the index.
  returned: always
  type: int
  sample: 4023
moddir:
  description: The module directory that was indexed.
  returned: always
  type: str
  sample: /lib/modules/6.1.0-56-amd64
unresolved:
  description: Undefined symbols that nothing provides, one entry per module and symbol.
  returned: when O(check_unresolved=true)
  type: list
  elements: dict
  contains:
    module:
      description: Module name.
      type: str
      sample: hello
    path:
      description: Module file.
      type: str
      sample: /lib/modules/6.1.0-56-amd64/extra/hello.ko
    symbol:
      description: The symbol nothing provides.
      type: str
      sample: no_such_function
  sample: [{module: hello, path: /lib/modules/6.1.0-56-amd64/extra/hello.ko, symbol: no_such_function}]
kmod_generation:
  description: The kmod release whose C(depmod) output was reproduced, and how it was chosen (see O(kmod_compat)).
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
  sample: {version: 34, source: dpkg, evidence: "/var/lib/dpkg/status: kmod 34"}
elapsed:
  description: Seconds the task spent computing and writing.
  returned: always
  type: float
  sample: 1.82
"""

import time
import typing as t

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kernel.kmod.plugins.module_utils._argspec import argument_spec
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.depmod_plan import apply, plan_depmod
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.errors import KmodError
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.paths import KmodPaths, check_path_value


def run(params: dict[str, t.Any], check_mode: bool, diff: bool) -> tuple[dict[str, t.Any], list[str]]:
    """Plan, apply unless check_mode; the result and the warnings."""
    start = time.monotonic()
    check_path_value(params["cache_dir"], "cache_dir")  # a bad value is an error even with cache off
    plan = plan_depmod(
        KmodPaths.from_params(params), config_dirs=params["config_dirs"], system_map=params["system_map"],
        symvers=params["symvers"], check_unresolved=params["check_unresolved"], jobs=params["jobs"],
        cache_dir=params["cache_dir"] if params["cache"] else None)
    out: dict[str, t.Any] = {"moddir": plan.moddir, "kmod_generation": plan.generation.as_result(),
                             "files_changed": plan.files_changed, "module_count": plan.module_count,
                             "changed": plan.changed}
    if diff:  # decoding the old and new texts costs time on big trees: only when shown
        out["diff"] = plan.diff()
    if not check_mode:
        apply(plan)
        out["changed"] = plan.changed
    warning = plan.leftover_warning(applied=not check_mode)
    if params["check_unresolved"]:
        out["unresolved"] = plan.unresolved
    out["elapsed"] = round(time.monotonic() - start, 3)
    return out, plan.warnings + ([warning] if warning else [])


def main() -> None:  # (exit_json and fail_json end it; AnsibleModule has no types)
    module = AnsibleModule(
        argument_spec=argument_spec(
            config_dirs={"type": "list", "elements": "path"},
            system_map={"type": "path"},
            symvers={"type": "path"},
            check_unresolved={"type": "bool", "default": False},
            cache={"type": "bool", "default": True},
            cache_dir={"type": "path", "default": "/var/cache/kernel-kmod"},
            jobs={"type": "int", "default": 0},
        ),
        supports_check_mode=True,
    )
    try:
        result, warnings = run(module.params, module.check_mode, module._diff)
    except KmodError as e:
        module.fail_json(msg=e.msg, **e.details)
    for warning in warnings:
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
