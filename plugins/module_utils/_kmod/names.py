# SPDX-License-Identifier: GPL-3.0-or-later
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Module-name normalisation and glibc-compatible fnmatch, as kmod's shared/util.c does them."""

from __future__ import annotations

import functools
import os
import re

from .errors import InvalidNameError

MODULE_EXTENSIONS = (".ko", ".ko.gz", ".ko.xz", ".ko.zst")


def modname_normalize(name: str) -> str:
    """kmod's modname_normalize: stop at the first '.', map '-' to '_'."""
    return name.split(".", 1)[0].replace("-", "_")


def modname_from_path(path: str) -> str:
    """kmod's path_to_modname: the normalised basename of a module file."""
    return modname_normalize(os.path.basename(path))


def alias_normalize(alias: str) -> str:
    """kmod's alias_normalize/underscores: '-' to '_' except inside a [...] group.

    Raises ValueError on a ']' outside a group or an unterminated '['.
    """
    if "[" not in alias and "]" not in alias:
        return alias.replace("-", "_")  # the usual case, and every lookup normalizes
    out = []
    i = 0
    n = len(alias)
    while i < n:
        c = alias[i]
        if c == "[":
            end = alias.find("]", i + 1)
            if end < 0:
                raise ValueError(f"unterminated '[' in {alias!r}")
            out.append(alias[i:end + 1])
            i = end + 1
            continue
        if c == "]":
            raise ValueError(f"unmatched ']' in {alias!r}")
        out.append("_" if c == "-" else c)
        i += 1
    return "".join(out)


def has_module_extension(path: str) -> bool:
    return path.endswith(MODULE_EXTENSIONS)


# re's \s is str.isspace() for str patterns; plus C0 controls and DEL.
_BAD_NAME_CHAR = re.compile(r"[\s\x00-\x1f\x7f]")


def validate_name(name: object, what: str = "module name") -> str:
    """Reject names modprobe could never mean: empty, whitespace or control characters."""
    if not isinstance(name, str) or not name:
        raise InvalidNameError(f"Invalid {what} {name!r}: it must be a non-empty string")
    if _BAD_NAME_CHAR.search(name) is not None:  # a regex: names are checked on every lookup
        raise InvalidNameError(
            f"Invalid {what} {name!r}: it holds whitespace or control characters")
    return name


@functools.lru_cache(maxsize=4096)
def _fnmatch_regex(pattern: str) -> list[tuple[re.Pattern[str], int]]:
    """Translate a glibc fnmatch(pattern, flags=0) pattern into regexes, one per run between
    '*'s, with the number of characters each matches.

    glibc semantics differ from Python's fnmatch: '\\' escapes the next character,
    both '[!...]' and '[^...]' negate, '*' also matches '/', and a ']' right after
    the opening bracket (or its negation) is literal.
    """
    runs: list[tuple[re.Pattern[str], int]] = []
    out: list[str] = []
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            # one regex with a '.*' per star backtracks exponentially: split at the stars
            runs.append((re.compile("".join(out), re.DOTALL), len(out)))
            out = []
        elif c == "?":
            out.append(".")
        elif c == "\\":
            # glibc: a trailing backslash never matches
            out.append(re.escape(pattern[i]) if i < n else "(?!)")
            i += 1
        elif c == "[":
            j = i
            negate = j < n and pattern[j] in "!^"
            if negate:
                j += 1
            items: list[str] = []
            first = True
            closed = False
            valid = None  # items before an invalid class name (glibc stops there)
            while j < n:
                ch = pattern[j]
                if ch == "]" and not first:
                    closed = True
                    j += 1
                    break
                first = False
                # glibc reads a class name of letters a-y only; else '[' is a plain member
                found = _CLASS_NAME.match(pattern, j) if ch == "[" else None
                if found is not None:
                    name = found.group(1)
                    if valid is None and (name not in _POSIX_CLASSES or len(name) >= 256):
                        valid = len(items)
                    items.append(_POSIX_CLASSES.get(name, ""))
                    j = found.end()
                    continue
                if ch == "\\" and j + 1 < n:
                    j += 1
                    ch = pattern[j]
                if j + 2 < n and pattern[j + 1] == "-" and pattern[j + 2] != "]":
                    hi = pattern[j + 2]
                    if hi == "\\" and j + 3 < n:
                        hi = pattern[j + 3]
                        j += 1
                    if ch <= hi:  # a reversed range matches nothing
                        items.append(f"{re.escape(ch)}-{re.escape(hi)}")
                    j += 3
                    continue
                items.append(re.escape(ch))
                j += 1
            if not closed:
                # glibc treats an unterminated '[' as a literal character.
                out.append(re.escape("["))
                continue
            if valid is not None:
                # glibc fails the match on reaching an invalid class name: only the items
                # before it can match, and a negated bracket never does
                items = [] if negate else items[:valid]
                negate = False
            if items:
                out.append("[" + ("^" if negate else "") + "".join(items) + "]")
            else:
                out.append("." if negate else "(?!)")
            i = j
        else:
            out.append(re.escape(c))
    runs.append((re.compile("".join(out), re.DOTALL), len(out)))
    return runs


_CLASS_NAME = re.compile(r"\[:([a-y]*):\]")
_POSIX_CLASSES = {
    "alnum": "a-zA-Z0-9", "alpha": "a-zA-Z", "blank": " \\t", "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9", "graph": "!-~", "lower": "a-z", "print": " -~",
    "punct": "!-/:-@\\[-`{-~", "space": " \\t\\n\\r\\f\\v", "upper": "A-Z", "xdigit": "0-9A-Fa-f",
}


_MAGIC = re.compile(r"[*?[\\]")


def fnmatch(pattern: str, string: str) -> bool:
    """glibc fnmatch(pattern, string, 0) == 0."""
    if _MAGIC.search(pattern) is None:  # most patterns are plain names; this runs per entry
        return pattern == string
    runs = _fnmatch_regex(pattern)
    # Each run matches a fixed number of characters, so taking the leftmost place for each
    # run between the first and the last is optimal: O(len(pattern) * len(string)).
    first, size = runs[0]
    if len(runs) == 1:
        return len(string) == size and first.match(string) is not None
    if len(string) < sum(r[1] for r in runs) or first.match(string) is None:
        return False
    pos = size
    for run, size in runs[1:-1]:
        found = run.search(string, pos)
        if found is None:
            return False
        pos = found.end()
    last, size = runs[-1]
    return len(string) - size >= pos and last.match(string, len(string) - size) is not None
