#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Helpers shared by tests/run.sh and the stage scripts it sources (pythons.sh,
# controllers.sh, gates.sh), which also run on their own.

# A working python3.X: on PATH (a pyenv shim may name one it cannot run), else the newest
# pyenv build of it.
find_python() {
  local minor=$1 found
  found=$(command -v "python$minor" 2>/dev/null) && "$found" -c '' 2>/dev/null && { echo "$found"; return 0; }
  found=$(compgen -G "${PYENV_ROOT:-$HOME/.pyenv}/versions/$minor.*/bin/python" | sort -V | tail -n 1)
  [[ -n "$found" ]] && "$found" -c '' 2>/dev/null && echo "$found"
}

# copy_collection REPO DEST: the files git knows in REPO (tracked, or new and not ignored)
# into DEST (an .../ansible_collections/kernel/kmod directory), so that nothing the tools
# leave behind lands in the checkout. Prints DEST.
copy_collection() {
  local src=$1 dest=$2
  mkdir -p "$dest"
  (cd "$src" && git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [[ -e "$f" ]] && printf '%s\0' "$f"; done |
    tar -c --null -T - -f -) | tar -x -C "$dest" || return 1
  echo "$dest"
}
