#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# The engine's and the modules' unit tests under the oldest Python a managed node may have
# (3.9: RHEL 9 family, Debian 11), with the oldest pyelftools a supported distribution ships
# (0.27: Debian 11's and Ubuntu 22.04's python3-pyelftools).
#
# ansible-core >= 2.16 runs its controller on Python 3.10+ only, but the module_utils it
# sends to targets (ansible.module_utils, which the modules import) support Python 3.8+
# (ansible-core 2.19: 3.8-3.14). So the venv gets the controller's own ansible-core release,
# installed without its controller dependencies and despite its python_requires: exactly
# the ansible.module_utils a 3.9 target runs the modules with. (ansible-core 2.15, the last
# 3.9 controller, would test other module_utils than any supported controller ships.)
#
# Usage:  bash tests/pythons.sh [PYTEST ARGS...]
# From tests/run.sh:  source tests/pythons.sh; stage_python39
# Exit status 77 (skipped) when no Python 3.9 is found (python3.9 on PATH or ~/.pyenv/versions/3.9.*).
set -uo pipefail

pythons_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY39_PYELFTOOLS=${PY39_PYELFTOOLS:-0.27}

# shellcheck source=tests/lib.sh
source "$pythons_repo/tests/lib.sh"  # find_python

# The ansible-core release the controller venv runs (else requirements-test.txt's newest match).
pythons_ansible_core() {
  local v
  v=$(python -c 'from ansible.release import __version__; print(__version__)' 2>/dev/null) &&
    { echo "ansible-core==$v"; return 0; }
  sed -n 's/^\(ansible-core[^ #]*\).*/\1/p' "$pythons_repo/requirements-test.txt" | head -n 1
}

stage_python39() {
  local python venv stamp want core log
  python=$(find_python 3.9) ||
    { echo "no Python 3.9 (python3.9 on PATH or ${PYENV_ROOT:-$HOME/.pyenv}/versions/3.9.*): skipped"; return 77; }
  venv=${KMOD_TEST_CACHE:-/var/cache/kernel-kmod-tests}/venv-py39
  core=$(pythons_ansible_core)
  want=$({ "$python" -VV; echo "$core pyelftools==$PY39_PYELFTOOLS"; } | sha256sum | cut -d' ' -f1)
  stamp=$venv/.kernel-kmod-requirements
  log=$(mktemp)
  if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    echo "creating $venv ($python, $core, pyelftools $PY39_PYELFTOOLS)"
    rm -rf "$venv"
    if ! { "$python" -m venv "$venv" &&
      "$venv/bin/pip" install -q "pyelftools==$PY39_PYELFTOOLS" zstandard pytest pytest-xdist pytest-mock mock hypothesis &&
      "$venv/bin/pip" install -q --no-deps --ignore-requires-python "$core"; } >"$log" 2>&1; then
      grep -v '^WARNING: Location' "$log"
      rm -f "$log"
      return 1
    fi
    echo "$want" >"$stamp"
  fi
  rm -f "$log"
  "$venv/bin/python" - "$PY39_PYELFTOOLS" <<'PY' || return 1
import sys
import elftools
import ansible.release
assert sys.version_info[:2] == (3, 9), sys.version
assert elftools.__version__ == sys.argv[1], elftools.__version__
print(f"Python {sys.version.split()[0]}, pyelftools {elftools.__version__}, ansible-core {ansible.release.__version__} (module_utils)")
PY
  (cd "$pythons_repo" && "$venv/bin/python" -m pytest -p no:cacheprovider -n "${PY39_JOBS:-auto}" \
    tests/unit/plugins/module_utils/_kmod tests/unit/plugins/modules "$@")
  local rc=$?
  ((rc == 5)) && return 77
  return "$rc"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  stage_python39 "$@"
fi
