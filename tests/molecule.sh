#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Run a molecule scenario (default kmod_role) with kernel.kmod resolved to this checkout.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
# A private link per run: a shared one could be repointed by another checkout mid-run.
base=$(mktemp -d "${TMPDIR:-/tmp}/kmod-molecule.XXXXXX")
trap 'rm -rf "$base"' EXIT
mkdir -p "$base/ansible_collections/kernel"
ln -s "$repo" "$base/ansible_collections/kernel/kmod"
export ANSIBLE_COLLECTIONS_PATH="$base"
cd "$repo"
molecule test -s "${1:-kmod_role}" "${@:2}"
