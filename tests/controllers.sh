#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Both ends of the controller range that meta/runtime.yml declares (requires_ansible):
# `ansible-test sanity` with the lowest ansible-core declared and with the newest on PyPI,
# each from its own virtual environment (under $KMOD_TEST_CACHE/controllers) made with a
# Python that ansible-core supports as a controller, on a copy of the collection.
# tests/sanity/ignore-X.Y.txt of each version must exist and stay empty.
#
# Usage (Debian 12, pyenv interpreters or python3.X on PATH):
#   bash tests/controllers.sh             # every controller below
#   bash tests/controllers.sh 2.21        # only those whose ansible-core spec starts so
# From tests/run.sh:  source tests/controllers.sh; stage_controllers
# Exit status 77 (skipped) when no controller could be set up for want of its Python.
set -uo pipefail

controllers_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# ansible-core spec and the controller Python it runs on. 2.16 supports 3.10-3.12 as
# controller; 2.20 and 2.21 need 3.12+ (2.21 is the newest release: bump with its successor).
KMOD_CONTROLLERS=${KMOD_CONTROLLERS:-"2.16:3.12 2.21:3.13"}

# shellcheck source=tests/lib.sh
source "$controllers_repo/tests/lib.sh"  # find_python, copy_collection

# sanity_with SPEC PYTHON_MINOR WORKDIR: 0 clean, 1 failed, 77 no such Python here.
sanity_with() {
  local spec=$1 minor=$2 work=$3 python venv stamp want dir ignore rc
  python=$(find_python "$minor") ||
    { echo "ansible-core $spec: no Python $minor (python$minor or ~/.pyenv/versions/$minor.*): skipped"; return 77; }
  venv=${KMOD_TEST_CACHE:-/var/cache/kernel-kmod-tests}/controllers/ansible-core-$spec
  want=$({ "$python" -VV; echo "ansible-core==$spec.*"; } | sha256sum | cut -d' ' -f1)
  stamp=$venv/.kernel-kmod-requirements
  if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    echo "creating $venv ($python)"
    rm -rf "$venv"
    if ! { "$python" -m venv "$venv" && "$venv/bin/pip" install -q "ansible-core==$spec.*"; } >"$work/pip-$spec.log" 2>&1; then
      grep -v '^WARNING: Location' "$work/pip-$spec.log"
      return 1
    fi
    echo "$want" >"$stamp"
  fi
  (
    export PATH=$venv/bin:$PATH VIRTUAL_ENV=$venv
    bash "$controllers_repo/tests/utils/seed_get_pip.sh" "$venv/bin/python" || exit 1
    version=$(ansible --version | sed -n '1s/.*core \([0-9]*\.[0-9]*\).*/\1/p')
    echo "== ansible-core $(ansible --version | sed -n '1s/.*core \([^]]*\)].*/\1/p') on Python $minor"
    ignore=$controllers_repo/tests/sanity/ignore-$version.txt
    [[ -f "$ignore" ]] || { echo "FAIL: $ignore is missing"; exit 1; }
    [[ -s "$ignore" ]] && { echo "FAIL: $ignore is not empty"; exit 1; }
    dir=$(copy_collection "$controllers_repo" "$work/$spec/collections/ansible_collections/kernel/kmod") || exit 1
    # (the filter drops pip's complaints about local index mirrors)
    (cd "$dir" && ansible-test sanity --python "$minor" --color no) 2>&1 |
      { grep -v '^WARNING: Location' || true; }
    exit "${PIPESTATUS[0]}"
  )
}

stage_controllers() {
  local work entry rc=0 ran=0 one filter=${1:-}
  work=$(mktemp -d "${TMPDIR:-/tmp}/kmod-controllers.XXXXXX") || return 1
  for entry in $KMOD_CONTROLLERS; do
    [[ -z "$filter" || "${entry%%:*}" == "$filter"* ]] || continue
    sanity_with "${entry%%:*}" "${entry#*:}" "$work"
    one=$?
    case $one in
      0) ran=$((ran + 1)) ;;
      77) ;;
      *) ran=$((ran + 1)); rc=1 ;;
    esac
  done
  rm -rf "$work"
  ((ran)) || return 77
  return "$rc"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  if (($#)); then
    status=0
    for v in "$@"; do stage_controllers "$v" || status=$?; done
    exit "$status"
  fi
  stage_controllers
fi
