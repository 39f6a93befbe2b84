#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Seed ansible-test's pip bootstrap cache with get_pip_offline.py, so that
# `ansible-test sanity` can build its virtual environments without the download host.
set -euo pipefail

python=${1:-python3}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The pip version ansible-test bootstraps, read from ansible-test itself.
version=$("$python" - <<'PY'
from ansible_test._internal.python_requirements import get_venv_packages
from ansible_test._internal.util import version_to_str
import sys
class Python:  # get_venv_packages only reads .version
    version = version_to_str(sys.version_info[:2])
print(get_venv_packages(Python())["pip"])
PY
)
cache=~/.ansible/test/cache/get_pip_${version//./_}.py
mkdir -p "$(dirname "$cache")"
install -m 0644 "$here/get_pip_offline.py" "$cache"
echo "seeded $cache (pip $version)"
