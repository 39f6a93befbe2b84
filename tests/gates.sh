#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# The ecosystem's gates: what Ansible's community collections and Galaxy run on a collection.
#
#   gate_integration  ansible-test integration (tests/integration/targets): the scratch-tree
#                     targets on this host (gate_integration_host), kmod_load in one test VM
#                     (gate_integration_vm)
#   gate_nox          antsibull-nox: lint, docs-check, extra-checks, build-import-check
#                     (the last builds the tarball and runs galaxy-importer on it)
#   gate_docs         antsibull-docs lint-collection-docs, then the static HTML site
#
# tests/run.sh sources this file and calls the functions as stages; alone (as root):
#   bash tests/gates.sh [integration|integration_host|integration_vm|nox|docs]...
#   (default: integration nox docs)
# See docs/gates.md. Each function returns non-zero when its gate fails. Nothing is written
# to the user's home: every tool gets a private HOME and private collection paths.
# gate_integration needs ansible-test (the test venv, $KMOD_TEST_CACHE/venv, is put on PATH
# when ansible-test is not there); gate_nox and gate_docs install their own tools into
# $KMOD_GATES_VENV from tests/gates-requirements.txt.

gates_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export KMOD_TEST_CACHE=${KMOD_TEST_CACHE:-/var/cache/kernel-kmod-tests}
gates_venv=${KMOD_GATES_VENV:-$KMOD_TEST_CACHE/gates-venv}
# shellcheck source=tests/lib.sh
source "$gates_repo/tests/lib.sh"  # copy_collection
# Sourced by tests/run.sh: its $work is removed when it exits. Alone: our own.
if [[ -n "${work:-}" && -d "${work:-}" ]]; then
  gates_work=$work
else
  mkdir -p "$KMOD_TEST_CACHE"
  gates_work=$(mktemp -d "$KMOD_TEST_CACHE/gates.XXXXXX")
  trap 'rm -rf "$gates_work"' EXIT
fi

# --- helpers ------------------------------------------------------------------

# A copy of the files git knows (tracked, or new and not ignored) at
# $gates_work/NAME/ansible_collections/kernel/kmod, where ansible-test, antsibull-nox and
# antsibull-docs look for a collection; what they leave behind stays out of the checkout.
gates_collection_copy() {
  local dest=$gates_work/$1/ansible_collections/kernel/kmod
  rm -rf "$dest"
  copy_collection "$gates_repo" "$dest"
}

# A private home and collection path for the tools: ansible-test keeps its ssh key and pip
# bootstrap in ~/.ansible/test, ansible-galaxy and antsibull-nox look into ~/.ansible/collections.
gates_private_env() {
  local home=$gates_work/home-$1
  mkdir -p "$home"
  export HOME=$home TMPDIR=$gates_work ANSIBLE_HOME=$home/.ansible ANSIBLE_LOCAL_TEMP=$home/.ansible/tmp
  export ANSIBLE_COLLECTIONS_PATH=$gates_work/$1 ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=false
  # pip's downloads are still cached across runs, outside the user's home.
  export PIP_CACHE_DIR=$KMOD_TEST_CACHE/pip-cache PIP_DISABLE_PIP_VERSION_CHECK=1
  export ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 PY_COLORS=0 NO_COLOR=1
}

# nox, antsibull-nox and antsibull-docs in their own venv (not the test venv: antsibull-nox
# and antsibull-docs pin their own ansible-core and sphinx), rebuilt when the requirements
# or the Python behind it change.
gates_tools() {
  local python=${PYTHON:-python3} want stamp=$gates_venv/.kernel-kmod-gates
  want=$({ "$python" -VV; cat "$gates_repo/tests/gates-requirements.txt"; } | sha256sum | cut -d' ' -f1)
  if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    echo "creating $gates_venv"
    rm -rf "$gates_venv"
    if ! { "$python" -m venv "$gates_venv" &&
      "$gates_venv/bin/pip" install -q -r "$gates_repo/tests/gates-requirements.txt"; } \
      >"$gates_work/gates-pip.log" 2>&1; then
      grep -v '^WARNING: Location' "$gates_work/gates-pip.log"
      return 1
    fi
    echo "$want" >"$stamp"
  fi
  export PATH=$gates_venv/bin:$PATH VIRTUAL_ENV=$gates_venv
}

# --- gates --------------------------------------------------------------------

# ansible-test integration (tests/integration/targets), in two places:
# - gate_integration_host: the targets that work on a scratch module tree (kmod_depmod,
#   kmod_blacklist, kmod_facts) on this host itself (--local), the tree copied from the cached
#   Debian kernel $KMOD_GATE_KERNEL (default 6.12: .ko.xz modules), this host's kmod the oracle;
# - gate_integration_vm: kmod_load (loads into the running kernel) in one real-kernel VM
#   (docs/vm.md), reached over ssh on its forwarded port: each task is an ssh round trip into a
#   TCG guest, so only what needs a kernel runs there.
# Extra arguments go to ansible-test (e.g. -v, or target names instead of the defaults).
gates_integration_targets_host=(kmod_depmod kmod_blacklist kmod_facts)
gates_integration_targets_vm=(kmod_load)

gates_ansible_test() {
  if ! command -v ansible-test >/dev/null && [[ -x "$KMOD_TEST_CACHE/venv/bin/ansible-test" ]]; then
    export PATH=$KMOD_TEST_CACHE/venv/bin:$PATH VIRTUAL_ENV=$KMOD_TEST_CACHE/venv
  fi
  command -v ansible-test >/dev/null || { echo "ansible-test not found (bash tests/run.sh installs it)"; return 1; }
}

gate_integration_host() (
  local kernel=${KMOD_GATE_KERNEL:-6.12} dir tree root release targets=("$@")
  gates_ansible_test || return 1
  tree=$(cd "$gates_repo/tests" && python -c 'import sys, kernels
t = kernels.pristine_root(sys.argv[1])
print(t.root, t.release)' "$kernel") || return 1
  read -r root release <<<"$tree"
  dir=$(gates_collection_copy integration-host) || return 1
  gates_private_env integration-host
  # ansible-test passes this file's variables to every target (setup_kmod_root's source).
  printf 'kmod_source_root: "%s"\nkmod_source_release: "%s"\n' "$root" "$release" \
    >"$dir/tests/integration/integration_config.yml"
  echo "scratch trees from $root, kernel $release"
  ((${#targets[@]})) || targets=("${gates_integration_targets_host[@]}")
  (cd "$dir" && ansible-test integration --color no --local "${targets[@]}")
)

gate_integration_vm() (
  local kernel=${KMOD_GATE_KERNEL:-6.12} name="kmod-gates-$$" dir vars port key targets=("$@")
  gates_ansible_test || return 1
  dir=$(gates_collection_copy integration-vm) || return 1
  gates_private_env integration-vm
  # ansible-test's pip bootstrap, offline (its cache lives in the private home).
  bash "$gates_repo/tests/utils/seed_get_pip.sh" python3 >/dev/null || return 1

  trap 'python3 "$gates_repo/tests/vm/vmctl.py" stop "$name"' EXIT
  vars=$(python3 "$gates_repo/tests/vm/vmctl.py" start "$name" --kernel "$kernel") ||
    { echo "$vars"; return 1; }
  read -r port key < <(printf '%s' "$vars" | python3 -c 'import json, sys
text = sys.stdin.read()
v = json.loads(text[text.index("{"):])
print(v["ansible_port"], v["ansible_ssh_private_key_file"])')
  echo "VM $name: kernel $kernel, ssh port $port"
  # ansible-test uses the key pair it finds in the content tree's tests/output/.tmp (else it
  # makes one in ~/.ansible/test): give it the VM's key.
  mkdir -p "$dir/tests/output/.tmp"
  install -m 0600 "$key" "$dir/tests/output/.tmp/id_rsa"
  ssh-keygen -y -f "$key" >"$dir/tests/output/.tmp/id_rsa.pub" || return 1
  ((${#targets[@]})) || targets=("${gates_integration_targets_vm[@]}")
  (cd "$dir" && ansible-test integration --color no --allow-destructive \
    --target "ssh:root@127.0.0.1:$port,python=3.11" "${targets[@]}")
)

gate_integration() {
  local rc=0
  gate_integration_host "$@" || rc=1
  gate_integration_vm "$@" || rc=1
  return "$rc"
}

# antsibull-nox's sessions (antsibull-nox.toml). Their venvs are kept in the test cache
# and reused (-r); the copy of the collection they run on is new each time.
gate_nox() (
  local dir sessions=(lint docs-check extra-checks build-import-check)
  gates_tools || return 1
  dir=$(gates_collection_copy nox) || return 1
  gates_private_env nox
  (($#)) && sessions=("$@")
  (cd "$dir" && nox --no-color --envdir "$KMOD_TEST_CACHE/nox-envs" -r -s "${sessions[@]}")
)

# antsibull-docs: the docs lint (plugin docs included), then the collection's static HTML
# site, the way community collections build theirs (sphinx-init --squash-hierarchy, then its
# build.sh's steps; rsync left out). Sphinx warnings fail the gate, except those that only
# say docs.ansible.com's intersphinx inventory is out of reach (CI has no network but the
# package registries) and the references into it that are therefore unresolved.
# The site is left in $KMOD_DOCS_SITE (default $KMOD_TEST_CACHE/docs-site).
gate_docs() (
  local dir site=${KMOD_DOCS_SITE:-$KMOD_TEST_CACHE/docs-site} build
  local offline="failed to reach any of the inventories|intersphinx inventory|undefined label: '(common_return_values|ansible_configuration_settings|ansible_collections\.ansible\.builtin\.[a-z_]+)'"
  gates_tools || return 1
  dir=$(gates_collection_copy docs) || return 1
  gates_private_env docs
  (cd "$dir" && antsibull-docs lint-collection-docs --plugin-docs --validate-collection-refs all .) ||
    return 1
  echo "antsibull-docs lint-collection-docs: clean"
  build=$gates_work/docs-build
  rm -rf "$build"
  mkdir -p "$build"
  antsibull-docs sphinx-init --use-current --squash-hierarchy --fail-on-error --dest-dir "$build" \
    kernel.kmod >/dev/null || return 1
  antsibull-docs --config-file "$build/antsibull-docs.cfg" collection --use-current --squash-hierarchy \
    --fail-on-error --dest-dir "$build/rst" kernel.kmod || return 1
  sphinx-build -M html "$build/rst" "$build/build" -c "$build" -q --keep-going \
    -w "$build/warnings.log" 2>"$build/sphinx.log" || { cat "$build/sphinx.log"; return 1; }
  # A warning's first line names the file or says WARNING (continuation lines do not).
  if grep -E '(^|: )(WARNING|ERROR|CRITICAL)' "$build/warnings.log" | grep -v -E "$offline"; then
    echo "FAIL: sphinx warnings (above)"
    return 1
  fi
  echo "sphinx: no warnings but $(grep -c -E "$offline" "$build/warnings.log") about the unreachable intersphinx inventories"
  [[ -f "$build/build/html/kmod_load_module.html" ]] || { echo "FAIL: the site has no page for kmod_load"; return 1; }
  rm -rf "$site"
  cp -a "$build/build/html" "$site"
  echo "docs site: $site/index.html"
)

# --- alone --------------------------------------------------------------------

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  set -uo pipefail
  gates=("$@")
  ((${#gates[@]})) || gates=(integration nox docs)
  failed=0 passed=0
  for g in "${gates[@]}"; do
    declare -F "gate_$g" >/dev/null || { echo "unknown gate '$g' (integration integration_host integration_vm nox docs)"; exit 2; }
    start=$SECONDS
    printf '\n=== gate %s ===\n' "$g"
    if "gate_$g"; then
      passed=$((passed + 1)); echo "--- $g: passed ($((SECONDS - start)) s)"
    else
      failed=$((failed + 1)); echo "--- $g: FAILED ($((SECONDS - start)) s)"
    fi
  done
  echo "$passed passed, $failed failed"
  ((failed == 0))
fi
