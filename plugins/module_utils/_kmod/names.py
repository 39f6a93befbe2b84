# SPDX-License-Identifier: GPL-3.0-or-later
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


def validate_name(name: object, what: str = "module name") -> str:
    """Reject names modprobe could never mean: empty, whitespace or control characters."""
    if not isinstance(name, str) or not name:
        raise InvalidNameError(f"Invalid {what} {name!r}: it must be a non-empty string")
    for ch in name:
        if ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F:
            raise InvalidNameError(
                f"Invalid {what} {name!r}: it holds whitespace or control characters")
    return name


@functools.lru_cache(maxsize=4096)
def _fnmatch_regex(pattern: str) -> re.Pattern[str]:
    """Translate a glibc fnmatch(pattern, flags=0) pattern into a regex.

    glibc semantics differ from Python's fnmatch: '\\' escapes the next character,
    both '[!...]' and '[^...]' negate, '*' also matches '/', and a ']' right after
    the opening bracket (or its negation) is literal.
    """
    out = []
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "\\" and i < n:
            out.append(re.escape(pattern[i]))
            i += 1
        elif c == "[":
            j = i
            negate = j < n and pattern[j] in "!^"
            if negate:
                j += 1
            items = []
            first = True
            closed = False
            while j < n:
                ch = pattern[j]
                if ch == "]" and not first:
                    closed = True
                    j += 1
                    break
                first = False
                if ch == "[" and pattern.startswith("[:", j):
                    end = pattern.find(":]", j + 2)
                    if end >= 0:
                        items.append(_posix_class(pattern[j + 2:end]))
                        j = end + 2
                        continue
                if ch == "\\" and j + 1 < n:
                    j += 1
                    ch = pattern[j]
                if j + 2 < n and pattern[j + 1] == "-" and pattern[j + 2] != "]":
                    hi = pattern[j + 2]
                    if hi == "\\" and j + 3 < n:
                        hi = pattern[j + 3]
                        j += 1
                    items.append(f"{re.escape(ch)}-{re.escape(hi)}")
                    j += 3
                    continue
                items.append(re.escape(ch))
                j += 1
            if not closed:
                # glibc treats an unterminated '[' as a literal character.
                out.append(re.escape("["))
                continue
            out.append("[" + ("^" if negate else "") + "".join(items) + "]")
            i = j
        else:
            out.append(re.escape(c))
    return re.compile("".join(out) + r"\Z", re.DOTALL)


_POSIX_CLASSES = {
    "alnum": "a-zA-Z0-9", "alpha": "a-zA-Z", "blank": " \\t", "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9", "graph": "!-~", "lower": "a-z", "print": " -~",
    "punct": "!-/:-@\\[-`{-~", "space": " \\t\\n\\r\\f\\v", "upper": "A-Z", "xdigit": "0-9A-Fa-f",
}


def _posix_class(name: str) -> str:
    return _POSIX_CLASSES.get(name, "")


def fnmatch(pattern: str, string: str) -> bool:
    """glibc fnmatch(pattern, string, 0) == 0."""
    if not any(ch in pattern for ch in "*?[\\"):
        return pattern == string
    return _fnmatch_regex(pattern).match(string) is not None
