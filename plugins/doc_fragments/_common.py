# SPDX-License-Identifier: GPL-3.0-or-later
# Must be kept in sync with plugins/module_utils/_argspec.py.

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  root:
    description:
      - Alternate system root, like C(depmod -b) and C(modprobe -d).
      - The module tree (C(lib/modules/RELEASE)), C(modprobe.d), C(depmod.d), C(modules-load.d),
        C(/proc) and C(/sys) are all taken under this directory.
      - It must be an existing directory; it is never created.
      - Other than C(/), every path is resolved as a process chrooted into O(root) would see it
        (C(chroot), C(systemd-nspawn)); a symlink, relative or absolute, is followed inside the
        image, C(..) never climbs above O(root), and nothing outside O(root) is read or written.
        Symlink loops are an error. A file the module writes must not itself be a symlink
        inside O(root) (it is refused rather than written through or replaced).
      - The module tree is C(usr/lib/modules/RELEASE) when C(lib/modules/RELEASE) does not exist there
        (merged-/usr images without the C(/lib) link, kmod built with C(--with-module-directory=/usr/lib/modules)).
    type: path
    default: /
  kernel_release:
    description:
      - Kernel release whose module tree is used, as C(uname -r) prints it.
      - Defaults to the running kernel's release.
      - It must start with C(N.N) and must not contain C(/), control characters or NUL.
    type: str
  kmod_compat:
    description:
      - Which kmod release's behaviour and output to reproduce, where kmod 28 (Debian 11), kmod 30
        (Debian 12) and kmod 34 (Debian 13) differ (index layout, C(modules.weakdep), C(*.alias) files in
        C(modprobe.d), modinfo padding, kmod 28's C(modules.builtin.alias.bin)).
      - V(auto) detects the kmod installed under O(root) (dpkg, else the C(libkmod.so) file name), else
        the layout of the existing C(modules.dep.bin); with no kmod at all, the newest (34).
      - Releases 29 and 31 to 33 are detected as themselves; this option offers the three generations tested.
    type: str
    choices: [auto, '28', '30', '34']
    default: auto
requirements:
  - pyelftools (on the managed node)
"""

    # Every module of meta/runtime.yml's action group kmod, and only those (antsibull-nox's
    # extra-checks session checks both ways).
    ACTIONGROUP_KMOD = r"""
options: {}
attributes:
  action_group:
    description: Use C(group/kernel.kmod.kmod) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - kernel.kmod.kmod
"""

    ATTRIBUTES = r"""
attributes:
  check_mode:
    description: Can run in check mode and tell what would change without changing anything.
    support: full
  diff_mode:
    description: Returns details of what changed (or would change in check mode) in diff mode.
    support: full
  platform:
    description: Target systems the module works on.
    support: full
    platforms: linux
"""

    FACTS = r"""
attributes:
  check_mode:
    description: Can run in check mode; it changes nothing in either mode.
    support: full
  diff_mode:
    description: Changes nothing, so there is nothing to diff.
    support: N/A
  facts:
    description: Returns an C(ansible_facts) dictionary that updates the host's facts.
    support: full
  platform:
    description: Target systems the module works on.
    support: full
    platforms: linux
"""
