# SPDX-License-Identifier: GPL-3.0-or-later
"""Stand-in for ansible-test's downloaded get-pip.py, for hosts that reach only package registries.

ansible-test bootstraps pip in each sanity virtual environment with a script fetched from a
host outside the registries; seed_get_pip.sh puts this file in its cache instead. It is run as
``python get_pip.py [pip options] pip==X.Y [--no-setuptools] [--no-wheel]``: bring up the pip
that Python bundles, then let it install the requested packages.
"""

from __future__ import annotations

import ensurepip
import os
import subprocess
import sys

# get-pip.py-only switches: pip's installer already leaves setuptools and wheel out.
GET_PIP_ONLY = frozenset(("--no-setuptools", "--no-wheel"))


def main() -> int:
    # ensurepip deletes every PIP_* variable and points PIP_CONFIG_FILE at /dev/null, which
    # would hide this machine's pip configuration (index, certificates) from the real install:
    # that runs with the environment as it was before.
    environ = dict(os.environ)
    ensurepip.bootstrap()
    args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY]
    return subprocess.call([sys.executable, "-m", "pip", "install", *args], env=environ)


if __name__ == "__main__":
    sys.exit(main())
