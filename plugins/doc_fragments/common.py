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
    type: path
    default: /
  kernel_release:
    description:
      - Kernel release whose module tree is used, as C(uname -r) prints it.
      - Defaults to the running kernel's release.
    type: str
requirements:
  - pyelftools (on the managed node)
"""

    ATTRIBUTES = r"""
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: linux
"""

    FACTS = r"""
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  facts:
    support: full
  platform:
    platforms: linux
"""
