# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# antsibull-nox's sessions, configured in antsibull-nox.toml (tests/gates.sh gate_nox runs them).
#
# /// script
# dependencies = ["nox>=2025.02.09", "antsibull-nox>=1.10,<2"]
# ///

import sys

import nox

try:
    import antsibull_nox
except ImportError:
    print("You need to install antsibull-nox in the same Python environment as nox.")
    sys.exit(1)


antsibull_nox.load_antsibull_nox_toml()


if __name__ == "__main__":
    nox.main()
