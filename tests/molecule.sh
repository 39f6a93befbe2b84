#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Run the molecule scenario(s) with kernel.kmod resolved to this checkout.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
base=${KMOD_TEST_CACHE:-/var/cache/kernel-kmod-tests}/collections
mkdir -p "$base/ansible_collections/kernel"
ln -sfn "$repo" "$base/ansible_collections/kernel/kmod"
export ANSIBLE_COLLECTIONS_PATH="$base"
cd "$repo"
exec molecule test -s "${1:-kmod_role}" "${@:2}"
