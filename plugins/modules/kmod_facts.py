#!/usr/bin/python
# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: kmod_facts
short_description: Kernel module facts, like lsmod, modinfo and modprobe -c together
version_added: 0.1.0
description:
  - Sets C(ansible_facts.kmod) to the loaded modules with their sizes, holders, state, taint and parameters,
    builtin modules, the kernel's taint, signature enforcement and module compression, the effective
    C(modprobe.d) configuration with the file and line of every entry, the modules loaded at boot,
    and C(modinfo) of chosen modules.
  - On a kernel without loadable module support (no C(/proc/modules), as in some containers) it
    reports RV(ansible_facts.kmod.modules_supported=false) and gathers the rest; it never fails for that.
  - Everything is read below O(root), so it also describes a mounted image or a chroot.
author:
  - kernel.kmod developers (!UNKNOWN)
extends_documentation_fragment:
  - kernel.kmod._common
  - kernel.kmod._common.facts
  - kernel.kmod._common.actiongroup_kmod
options:
  gather_subset:
    description:
      - Which parts to gather, like M(ansible.builtin.setup)'s option of that name.
      - V(loaded) (C(/proc/modules) and C(/sys/module)), V(builtin), V(config) (C(modprobe.d)),
        V(boot) (C(modules-load.d) and C(/etc/modules)), V(modinfo) (for the names in O(modinfo); gathered
        whenever O(modinfo) names modules, whatever this option says).
      - V(devices) (the devices present, see RV(ansible_facts.kmod.devices)) is gathered only when
        named, V(all) does not include it, because it walks C(/sys/devices) and resolves an alias
        per device, more than a fleet-wide default run should pay for.
      - V(all) means all of them but V(devices); V(min) only the kernel-wide values, which are always gathered.
      - A name prefixed with C(!) is left out, for example V(!config). V(!all) drops what V(all) adds, but
        subsets named explicitly are still gathered, so V([!all, loaded]) gathers V(min) and V(loaded).
    type: list
    elements: str
    default: [all]
  modinfo:
    description:
      - Module names, aliases or paths of module files to report C(modinfo) for, under
        RV(ansible_facts.kmod.modinfo). Names resolve as C(modinfo) resolves them (indexes only, no C(modprobe.d)).
      - Naming modules here asks for them, so they are gathered whatever O(gather_subset) says (also with V(min)).
      - A name that resolves to nothing gives V(null) and a warning.
    type: list
    elements: str
    default: []
notes:
  - Sizes are what C(lsmod) prints (C(/sys/module/NAME/coresize), else C(/proc/modules)).
  - Module addresses are only shown to privileged users; otherwise they are V(null).
seealso:
  - module: kernel.kmod.kmod_load
  - module: kernel.kmod.kmod_blacklist
  - module: ansible.builtin.setup
"""

EXAMPLES = r"""
- name: Gather module facts
  kernel.kmod.kmod_facts:

- name: Is nf_nat loaded, and who uses it?
  ansible.builtin.debug:
    msg: "{{ ansible_facts.kmod.loaded.nf_nat.holders | default('not loaded') }}"

- name: Only the loaded modules, cheaply, on a whole fleet
  kernel.kmod.kmod_facts:
    gather_subset: [loaded]

- name: Everything but the configuration, and modinfo of two modules
  kernel.kmod.kmod_facts:
    gather_subset: [all, '!config']
    modinfo: [e1000e, dummy]

- name: Which module drives which device, and which modules could (like lspci -k, for every bus)
  kernel.kmod.kmod_facts:
    gather_subset: [min, devices]

- name: Devices nothing drives now, with the modules that could
  ansible.builtin.debug:
    msg: "{{ ansible_facts.kmod.devices | selectattr('driver', 'none') | rejectattr('modules', 'equalto', [])
             | map(attribute='path') | list }}"

- name: Which of my devices would kernel 6.12 drive? (its tree installed in /lib/modules)
  kernel.kmod.kmod_facts:
    gather_subset: [min, devices]
    kernel_release: 6.12.117+deb12-amd64

- name: Show e1000e's parameters
  ansible.builtin.debug:
    var: ansible_facts.kmod.modinfo.e1000e.parm
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
ansible_facts:
  description: Facts to add to C(ansible_facts).
  returned: always
  type: complex
  contains:
    kmod:
      description: Kernel module facts.
      returned: always
      type: complex
      contains:
        kernel_release:
          description: The kernel release the facts are about.
          returned: always
          type: str
          sample: 6.1.0-56-amd64
        moddir:
          description: The module tree of that release.
          returned: always
          type: str
          sample: /lib/modules/6.1.0-56-amd64
        modules_supported:
          description: Whether the kernel has loadable module support (C(/proc/modules) exists).
          returned: always
          type: bool
          sample: true
        taint:
          description:
            - The kernel's taint (C(/proc/sys/kernel/tainted)) decoded as the kernel documents it;
              null when unreadable.
            - C(flags) lists C(bit), C(letter) and C(description) of every set bit.
          returned: always
          type: dict
          sample: {value: 12288, text: OE, flags: [{bit: 12, letter: O, description: "externally-built (\"out-of-tree\") module was loaded"},
                                                   {bit: 13, letter: E, description: unsigned module was loaded}]}
        sig_enforce:
          description: Whether only validly signed modules load; null when the kernel has no module signing.
          returned: always
          type: bool
          sample: false
        compression:
          description: Compression the kernel decompresses itself (C(/sys/module/compression)); null if none.
          returned: always
          type: str
          sample: xz
        gathered_subsets:
          description: The subsets gathered.
          returned: always
          type: list
          elements: str
          sample: [boot, builtin, config, loaded, modinfo]
        loaded:
          description:
            - Loaded modules by kernel name, in C(/proc/modules) order. Each has C(name), C(size), C(refcount)
              (null without unload support), C(holders), C(permanent) (cannot be unloaded), C(state)
              (C(Live), C(Loading), C(Unloading)), C(initstate), C(taint) (letters), C(address) (null if
              hidden), C(parameters) (readable files under C(/sys/module/NAME/parameters)), C(filename)
              (the file in the module tree, null if not there) and C(file_module) (its name in
              C(modules.dep), which differs from the kernel name for some out-of-tree modules).
            - Empty when modules are not supported.
          returned: V(loaded) in O(gather_subset)
          type: dict
          sample: {dummy: {name: dummy, size: 16384, refcount: 0, holders: [], permanent: false, state: Live,
                           initstate: live, taint: "", address: null, parameters: {numdummies: "1"},
                           filename: /lib/modules/6.1.0-56-amd64/kernel/drivers/net/dummy.ko, file_module: dummy}}
        builtin:
          description: Builtin modules (C(modules.builtin)) and C(/sys/module) entries without C(initstate), sorted.
          returned: V(builtin) in O(gather_subset)
          type: list
          elements: str
          sample: [8250, crc32c_generic, ext4, unix]
        config:
          description:
            - The effective C(modprobe.d) configuration (plus C(modules.softdep) and the kernel command line),
              in the order C(modprobe) reads it. Every entry has C(file) and C(line) (0 for the command line).
            - C(aliases) (C(alias), C(module)), C(options) (C(module), C(options)), C(install) and C(remove)
              (C(module), C(command)), C(softdeps) (C(module), C(pre), C(post)), C(weakdeps) (C(module), C(deps)),
              C(blacklist) (C(module)); C(files) lists the files read, C(warnings) the lines C(modprobe) ignores.
          returned: V(config) in O(gather_subset)
          type: dict
          sample: {blacklist: [{module: pcspkr, file: /etc/modprobe.d/blacklist.conf, line: 3}],
                   options: [{module: dummy, options: numdummies=2, file: /etc/modprobe.d/dummy.conf, line: 1}],
                   aliases: [], install: [], remove: [], softdeps: [], weakdeps: [],
                   files: [/etc/modprobe.d/blacklist.conf, /etc/modprobe.d/dummy.conf], warnings: []}
        modules_load:
          description:
            - Modules loaded at boot with the C(file) and C(line) naming them, in this order; the kernel command line's
              C(modules-load=), C(modules-load.d) (C(/etc), C(/run), C(/usr/local/lib), C(/usr/lib)), then
              Debian's C(/etc/modules) (entries there also have C(args)).
          returned: V(boot) in O(gather_subset)
          type: list
          elements: dict
          sample: [{module: br_netfilter, file: /etc/modules-load.d/k8s.conf, line: 1},
                   {module: loop, file: /etc/modules, line: 5, args: ""}]
        modinfo:
          description:
            - For each name in O(modinfo), the fields C(modinfo) prints for the module it resolves to; C(filename)
              (C((builtin)) for builtin ones), C(builtin), every C(.modinfo) key (C(alias), C(author), C(firmware),
              C(softdep), C(weakdep) and C(import_ns) always as lists, other keys as lists only when repeated), the
              signature (C(sig_id), C(signer), C(sig_key), C(sig_hashalgo), C(signature)) and C(parm), a dict by
              parameter name of C(description) and C(type).
            - C(others) holds the same for further modules an alias resolves to; C(text) is exactly what
              C(modinfo NAME) prints for all of them.
            - Null for a name that resolves to nothing.
          returned: O(modinfo) not empty
          type: dict
          sample: {dummy: {filename: /lib/modules/6.1.0-56-amd64/kernel/drivers/net/dummy.ko, builtin: false,
                           alias: [rtnl-link-dummy], license: GPL, depends: "", intree: "Y", name: dummy,
                           vermagic: "6.1.0-56-amd64 SMP preempt mod_unload modversions ", sig_id: "PKCS#7",
                           parm: {numdummies: {description: Number of dummy pseudo devices, type: int}},
                           others: [], text: "filename:       /lib/modules/6.1.0-56-amd64/kernel/drivers/net/dummy.ko\n..."}}
        devices:
          description:
            - Every device of the running kernel that has a C(modalias) in sysfs, like C(lspci -k) for every bus;
              the devices of C(/sys/bus/*/devices) by bus and name, then those only found under C(/sys/devices)
              (class devices such as C(input)), by path.
            - C(path) (under C(/sys/devices)), C(name), C(bus) (the bus, or the class of a class device; null if
              sysfs names none), C(modalias), C(driver) (bound now, null if none), C(driver_module) (the module
              its C(driver/module) link names, null if none), C(driver_builtin) (the driver is built into the
              kernel, with no C(module) link or a C(/sys/module) entry without C(initstate); null without a driver).
            - C(modules) is exactly what C(modprobe --resolve-alias MODALIAS) prints, in that order, one name per
              matching alias, so a module matching twice is listed twice. It honours O(root) and
              O(kernel_release), so it tells which modules of another kernel's tree would drive the devices
              present; sysfs is always the running system's.
            - Entries that cannot be read, or whose links lead out of C(/sys), are skipped with a warning.
          returned: V(devices) in O(gather_subset)
          type: list
          elements: dict
          sample: [{path: "/sys/devices/pci0000:00/0000:00:04.0/virtio1", name: virtio1, bus: virtio,
                    modalias: "virtio:d00000002v00001AF4", driver: virtio_blk, driver_module: virtio_blk,
                    driver_builtin: false, modules: [virtio_blk]}]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kernel.kmod.plugins.module_utils._argspec import argument_spec
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.errors import KmodError
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.facts import FactsGatherer, select_subsets
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.generation import detect_generation
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.paths import KmodPaths


def main() -> None:  # (exit_json and fail_json end it; AnsibleModule has no types)
    module = AnsibleModule(
        argument_spec=argument_spec(
            gather_subset={"type": "list", "elements": "str", "default": ["all"]},
            modinfo={"type": "list", "elements": "str", "default": []},
        ),
        supports_check_mode=True,
    )
    try:
        subsets = select_subsets(module.params["gather_subset"])
        paths = KmodPaths.from_params(module.params)
        facts, warnings = FactsGatherer(paths).gather(subsets, module.params["modinfo"])
        generation = detect_generation(paths).as_result()
    except KmodError as e:
        module.fail_json(msg=e.msg, **e.details)
    for warning in warnings:
        module.warn(warning)
    module.exit_json(changed=False, ansible_facts={"kmod": facts}, kmod_generation=generation)


if __name__ == "__main__":
    main()
