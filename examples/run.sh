#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# README's first command, as root on Debian 12: install what kernel.kmod needs, build and
# install the collection, and run examples/site.yml on the current Debian kernel package,
# unpacked into a directory (this machine's own kernel may have no module support at all).
#   KMOD_EXAMPLE_DIR  where everything goes (default /var/tmp/kernel-kmod-example)
#   KMOD_EXAMPLE_KERNEL  the linux-image package to use (default: what linux-image-amd64 pulls in)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${KMOD_EXAMPLE_DIR:-/var/tmp/kernel-kmod-example}
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1

echo "== Debian packages"
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends kmod python3-venv ca-certificates >/dev/null

echo "== Ansible and the collection's Python dependencies in $dir/venv"
mkdir -p "$dir"
[[ -x "$dir/venv/bin/python" ]] || python3 -m venv "$dir/venv"
"$dir/venv/bin/pip" install -q "ansible-core>=2.19,<2.20" -r "$repo/meta/ee-requirements.txt" 2>&1 |
  { grep -v '^WARNING: Location' || true; }
export PATH=$dir/venv/bin:$PATH

echo "== Build and install kernel.kmod into $dir/collections"
ansible-galaxy collection build "$repo" --output-path "$dir" --force
ansible-galaxy collection install --force -p "$dir/collections" "$dir"/kernel-kmod-*.tar.gz
export ANSIBLE_COLLECTIONS_PATH=$dir/collections

package=${KMOD_EXAMPLE_KERNEL:-$(apt-cache depends linux-image-amd64 | awk '$1 == "Depends:" { print $2; exit }')}
echo "== Unpack $package into $dir/root"
(cd "$dir" && { compgen -G "${package}_*.deb" >/dev/null || apt-get download -q "$package"; })
rm -rf "$dir/root"
dpkg -x "$(compgen -G "$dir/${package}_*.deb" | head -n1)" "$dir/root"
release=$(basename "$(compgen -G "$dir/root/lib/modules/*" | head -n1)")

echo "== examples/site.yml on $release"
ansible-playbook -i "$repo/examples/inventory/localhost.yml" "$repo/examples/site.yml" \
  -e "kmod_root=$dir/root" -e "kmod_release=$release"
