#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# The whole test suite of kernel.kmod: README's test command, and what .ci/run runs.
#
# Usage (as root, Debian 12):  bash tests/run.sh [STAGE...]
#   Stages: unit python39 sanity controllers build example lint changelog docs nox integration
#   (main lane) and vm integration_vm molecule (guest lane), then home (checks that no stage
#   changed the user's collection paths). Default: all of them but units (ansible-test units
#   runs the same tests as unit, under the same Python: `bash tests/run.sh units` still works).
#   It first installs what it needs: Debian packages (apt-get) and the Python tools of
#   requirements-test.txt in a virtual environment ($KMOD_VENV, default under the test cache).
# Two lanes (KMOD_LANES=1: one): the guest lane's stages each keep one qemu guest (one core,
# TCG) busy and run one after the other beside the main lane, which, once done, takes those
# not started yet from the end of the list (molecule first); their output goes to a log per
# stage (printed whole when the stage fails, kept in $KMOD_TEST_CACHE/logs/run-*), the main
# lane prints as it goes.
# Each stage prints its time; the last line is "N passed, N failed[, N skipped]" over the
# stages, and the exit status is non-zero when any stage failed.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export KMOD_TEST_CACHE=${KMOD_TEST_CACHE:-/var/cache/kernel-kmod-tests}
venv=${KMOD_VENV:-$KMOD_TEST_CACHE/venv}
python=${PYTHON:-python3}
all_stages=(unit python39 vm sanity controllers units build example lint changelog docs nox integration
  integration_vm molecule home)
default_stages=(unit python39 vm sanity controllers build example lint changelog docs nox integration
  integration_vm molecule home)
# Stages that spend their time in qemu guests: the second lane.
guest_lane=(vm integration_vm molecule)
lanes=${KMOD_LANES:-2}
apt_packages=(kmod qemu-system-x86 qemu-utils debootstrap busybox-static xz-utils zstd
  e2fsprogs cpio openssh-client git shellcheck python3-venv ca-certificates)

export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 ANSIBLE_NOCOLOR=1
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0

SKIP=77 # a stage's exit status for "nothing to run here" (automake's convention)
# Scratch space beside the kernel cache: scratch trees are hard links into it.
mkdir -p "$KMOD_TEST_CACHE"
work=$(mktemp -d "$KMOD_TEST_CACHE/run.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Stages defined in their own scripts (sourced after $work exists: gates.sh works in it):
# python39 (unit tests under the oldest target Python), controllers (ansible-test sanity at
# both ends of the supported ansible-core range), docs (antsibull-docs lint and HTML site).
source "$repo/tests/lib.sh"
source "$repo/tests/pythons.sh"
source "$repo/tests/controllers.sh"
source "$repo/tests/gates.sh"
stage_docs() { gate_docs; }
stage_nox() { gate_nox "$@"; }
stage_integration() { gate_integration_host; }
stage_integration_vm() { gate_integration_vm; }

log() { printf '\n=== %s ===\n' "$*"; }

# --- set-up -----------------------------------------------------------------

install_debian_packages() {
  local missing=() p
  for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  echo "apt-get install ${missing[*]}"
  if ! { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } \
    >"$work/apt.log" 2>&1; then
    cat "$work/apt.log"
    return 1
  fi
}

# The venv is rebuilt only when requirements-test.txt or the Python behind it changes.
install_python_tools() {
  local stamp want
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    { echo "$python is older than 3.11"; return 1; }
  want=$({ "$python" -VV; cat "$repo/requirements-test.txt"; } | sha256sum | cut -d' ' -f1)
  stamp=$venv/.kernel-kmod-requirements
  if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    echo "creating $venv"
    rm -rf "$venv"
    if ! { "$python" -m venv "$venv" &&
      "$venv/bin/pip" install -q -r "$repo/requirements-test.txt"; } >"$work/pip.log" 2>&1; then
      grep -v '^WARNING: Location' "$work/pip.log"
      return 1
    fi
    echo "$want" >"$stamp"
  fi
  # (SC2031: the sourced tests/controllers.sh sets PATH in subshells of its own, for its venvs)
  # shellcheck disable=SC2031
  export PATH=$venv/bin:$PATH VIRTUAL_ENV=$venv
  bash "$repo/tests/utils/seed_get_pip.sh" "$venv/bin/python"
}

# ansible-test, ansible-galaxy and ansible-lint work on the collection as
# ansible_collections/kernel/kmod: a copy of the files git knows (tracked, or
# new and not ignored), so that nothing they leave behind lands in the repository.
collection_copy() {
  local dest=$work/collections/ansible_collections/kernel/kmod
  if [[ -d "$dest" ]]; then echo "$dest"; else copy_collection "$repo" "$dest"; fi
}

# --- stages -----------------------------------------------------------------

# pytest's exit status 5 means it collected no test: the stage is skipped, not passed.
run_pytest() {
  python -m pytest -p no:cacheprovider "$@"
  local rc=$?
  ((rc == 5)) && return "$SKIP"
  return "$rc"
}

# Spread over the cores, as ansible-test units does.
stage_unit() { (cd "$repo" && run_pytest -n auto tests/unit); }

stage_vm() {
  [[ -d "$repo/tests/vm" ]] || { echo "no tests/vm"; return "$SKIP"; }
  (cd "$repo" && run_pytest --durations=15 tests/vm)  # durations: where CI time goes
}

stage_sanity() {
  local dir
  dir=$(collection_copy) || return 1
  # (the filter drops pip's complaints about this machine's local index mirrors)
  (cd "$dir" && ansible-test sanity --python 3.11 --color no) 2>&1 |
    { grep -v '^WARNING: Location' || true; }
}

stage_units() {
  local dir
  dir=$(collection_copy) || return 1
  (cd "$dir" && ansible-test units --python 3.11 --color no)
}

# Build, install the tarball into a private collections path, and use that copy alone:
# ansible-doc for every module, then the example playbook on a scratch copy of a test kernel.
stage_build() {
  local dir tarball installed=$work/installed module tree root release rc=0
  dir=$(collection_copy) || return 1
  (cd "$dir" && ansible-galaxy collection build --output-path "$work/dist") || return 1
  tarball=$(ls "$work"/dist/kernel-kmod-*.tar.gz) || return 1
  if tar -tzf "$tarball" | grep -E '(^|/)(tests/output|__pycache__|\.pytest_cache|\.?benchmarks|\.ansible|\.ci)(/|$)|\.ko(\.xz|\.zst|\.gz)?$'; then
    echo "FAIL: the tarball holds test output, caches or module corpora (above)"
    return 1
  fi
  ansible-galaxy collection install --force -p "$installed" "$tarball" || return 1
  export ANSIBLE_COLLECTIONS_PATH=$installed ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=false
  ansible-galaxy collection list kernel.kmod | grep -F "$installed" || return 1
  for module in "$installed"/ansible_collections/kernel/kmod/plugins/modules/*.py; do
    module=$(basename "$module" .py)
    if ansible-doc "kernel.kmod.$module" >"$work/doc-$module.txt" 2>&1; then
      echo "ansible-doc kernel.kmod.$module: ok"
    else
      cat "$work/doc-$module.txt"
      rc=1
    fi
  done
  tree=$(python - "$work/tree" <<'PY'
import sys
sys.path.insert(0, "tests")
import kernels
tree = kernels.scratch_root("6.12", sys.argv[1])
print(tree.root, tree.release)
PY
  ) || return 1
  read -r root release <<<"$tree"
  ansible-playbook -i examples/inventory/localhost.yml examples/site.yml \
    -e "kmod_root=$root" -e "kmod_release=$release" || rc=1
  return "$rc"
}

# README's first command, as it stands (its files are kept in the test cache).
stage_example() { KMOD_EXAMPLE_DIR=$KMOD_TEST_CACHE/example bash "$repo/examples/run.sh"; }

stage_lint() {
  local dir targets=()
  dir=$(collection_copy) || return 1
  [[ -d "$dir/roles" ]] && targets+=(roles)
  [[ -d "$dir/examples" ]] && targets+=(examples)
  ((${#targets[@]})) || { echo "no roles or examples"; return "$SKIP"; }
  # The copy sits in a collections tree: that is how ansible-lint finds kernel.kmod.
  (cd "$dir" && ANSIBLE_COLLECTIONS_PATH=${dir%/ansible_collections/*} ansible-lint --offline --nocolor "${targets[@]}")
}

stage_changelog() { (cd "$repo" && antsibull-changelog lint -v); }

# The scenario's own runner (tests/molecule.sh) resolves kernel.kmod to this checkout.
stage_molecule() {
  compgen -G "extensions/molecule/*/molecule.yml" >/dev/null || { echo "no molecule scenario"; return "$SKIP"; }
  bash tests/molecule.sh
}

# Ansible's default collection paths: every install of the suite belongs in its own
# directories, never where the user's playbooks would find it.
home_collection_paths=("$HOME/.ansible/collections" /usr/share/ansible/collections)
collections_fingerprint() {
  local d
  for d in "${home_collection_paths[@]}"; do
    echo "== $d"
    # What lies below (an empty directory that ansible creates by default holds nothing).
    [[ -d "$d" ]] && find "$d" -mindepth 1 -maxdepth 4 -printf '%y %p %s %T@\n' | LC_ALL=C sort
  done
}
home_before=$(collections_fingerprint)

stage_home() {
  local now
  now=$(collections_fingerprint)
  if [[ "$now" != "$home_before" ]]; then
    echo "FAIL: the test suite changed the user's collection paths:"
    diff <(echo "$home_before") <(echo "$now")
    return 1
  fi
  echo "unchanged: ${home_collection_paths[*]}"
}

# --- driver -----------------------------------------------------------------

# Each stage's result is a line "NAME STATUS SECONDS" in $results (the guest lane is a
# subshell: it cannot add to this shell's arrays).
results=$work/results
: >"$results"
record() {
  local name=$1 rc=$2 took=$3
  echo "$name $rc $took" >>"$results"
  case $rc in
    0) echo "--- $name: passed (${took} s)" ;;
    "$SKIP") echo "--- $name: skipped (${took} s)" ;;
    *) echo "--- $name: FAILED, status $rc (${took} s)" ;;
  esac
}

run_stage() {
  local name=$1 start=$SECONDS rc
  log "$name"
  # A subshell keeps what a stage exports (collections paths...) to itself.
  (cd "$repo" && "stage_$name")
  rc=$?
  record "$name" "$rc" $((SECONDS - start))
}

# A guest-lane stage runs once, in whichever lane claims it first (mkdir is atomic).
claim() { mkdir "$work/claimed-$1" 2>/dev/null; }

# The same, output to the stage's log: one line when it starts, the result when it ends.
run_stage_logged() {
  local name=$1 start=$SECONDS rc
  echo "=== $name (guest stage, log: $logs/$name.log) ==="
  (cd "$repo" && "stage_$name") >"$logs/$name.log" 2>&1
  rc=$?
  record "$name" "$rc" $((SECONDS - start))
}

stages=("$@")
((${#stages[@]})) || stages=("${default_stages[@]}")
for s in "${stages[@]}"; do
  [[ " ${all_stages[*]} " == *" $s "* ]] ||
    { echo "unknown stage '$s' (stages: ${all_stages[*]})"; exit 2; }
done

log "set-up"
start=$SECONDS
if ! install_debian_packages || ! install_python_tools; then
  echo "--- set-up: FAILED ($((SECONDS - start)) s)"
  echo "0 passed, 1 failed"
  exit 1
fi
echo "--- set-up: done ($((SECONDS - start)) s)"

main=() guests=() last=()
for s in "${stages[@]}"; do
  if [[ $s == home ]]; then last+=("$s")
  elif ((lanes > 1)) && [[ " ${guest_lane[*]} " == *" $s "* ]]; then guests+=("$s")
  else main+=("$s"); fi
done
# One lane when there is nothing to run beside it.
((${#main[@]})) || { main=("${guests[@]}"); guests=(); }
if ((${#guests[@]})); then
  mkdir -p "$KMOD_TEST_CACHE/logs"
  logs=$(mktemp -d "$KMOD_TEST_CACHE/logs/run-$(date +%Y%m%dT%H%M%S)-XXXX")
  echo "guest lane: ${guests[*]} (beside: ${main[*]})"
  ( for s in "${guests[@]}"; do claim "$s" && run_stage_logged "$s"; done ) &
  guest_pid=$!
fi
for s in "${main[@]}"; do run_stage "$s"; done
# Then the main lane takes guest stages from the end of the guest lane's list (molecule
# first) that the guest lane has not started: once the main lane is done, the guest lane
# alone would leave a core idle.
for ((i = ${#guests[@]} - 1; i >= 0; i--)); do
  claim "${guests[i]}" && run_stage_logged "${guests[i]}"
done
if ((${#guests[@]})); then
  wait "$guest_pid"
  while read -r name rc _took; do
    if [[ " ${guests[*]} " == *" $name "* ]] && ((rc != 0 && rc != SKIP)); then
      log "$name (guest lane): log"
      cat "$logs/$name.log"
    fi
  done <"$results"
fi
for s in "${last[@]}"; do run_stage "$s"; done

passed=() failed=() skipped=()
for s in "${stages[@]}"; do
  read -r _name rc _took < <(grep "^$s " "$results") || continue
  case $rc in
    0) passed+=("$s") ;;
    "$SKIP") skipped+=("$s") ;;
    *) failed+=("$s") ;;
  esac
done

log "summary"
printf '%-10s %s\n' "passed:" "${passed[*]:-}" "failed:" "${failed[*]:-}" "skipped:" "${skipped[*]:-}"
echo "total time: $SECONDS s"
line="${#passed[@]} passed, ${#failed[@]} failed"
((${#skipped[@]})) && line+=", ${#skipped[@]} skipped"
echo "$line"
((${#failed[@]} == 0))
