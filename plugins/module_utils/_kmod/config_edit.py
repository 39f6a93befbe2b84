# SPDX-License-Identifier: GPL-3.0-or-later
"""Line-preserving editor for ONE modprobe.d file: blacklist and disable entries (no I/O).

A file is read the way libkmod reads it (``freadline_wrapped`` + ``kmod_config_parse``):
``\\``+newline joins physical lines, any other ``\\``+char is that char, a logical line
whose first character is ``#`` is a comment, and words are split on space and tab.
Every logical line keeps its original text, so lines the editor does not touch come
out byte for byte as they went in.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing as t

from .config import LineTokens, logical_lines
from .errors import InvalidNameError, KmodError
from .names import alias_normalize, validate_name

BLACKLIST = "blacklist"
DISABLE = "disable"
MODES = (BLACKLIST, DISABLE)

# The command that makes every load of a module fail, explicit or as a dependency.
FALSE_COMMAND = "/bin/false"
# Install commands that only stop a module from loading (the usual "disable" idioms).
_STOPPING_COMMANDS = frozenset(("false", "true"))
# Characters a module name can never hold in a blacklist: path separators, glob
# characters (install patterns would match more), escapes and comments.
_BAD_NAME_CHARS = frozenset("/*?[]\\#")

_BLANKS = re.compile("[ \t]+")

NEW_FILE_HEADER = "# Managed by kernel.kmod.kmod_blacklist: blacklisted and disabled kernel modules.\n"


def check_module_name(name: object) -> str:
    """The name if it can stand in a ``blacklist``/``install`` line, else InvalidNameError."""
    name = validate_name(name)
    bad = sorted(set(name) & _BAD_NAME_CHARS)
    if bad:
        raise InvalidNameError(
            f"Invalid module name {name!r}: it must not contain {' '.join(bad)}", name=name)
    return name


def module_key(name: str) -> str:
    """How kmod compares names in modprobe.d: '-' and '_' are the same."""
    return name.replace("-", "_")


@dataclasses.dataclass
class ConfLine:
    """One logical line: its original text (all physical lines) and the words kmod sees."""

    raw: str
    words: list[str]
    # Text after the single blank that ended the module name, as strtok_r(…, "\0") gives it.
    rest: str = ""

    @property
    def kind(self) -> str | None:
        """'blacklist', 'install' or 'softdep' when kmod would take this line as one, else None."""
        if not self.words:
            return None
        if self.words[0] == "blacklist" and len(self.words) >= 2:
            return "blacklist"
        if self.words[0] in ("install", "softdep") and self.rest:
            return self.words[0]
        return None

    @property
    def key(self) -> str | None:
        """Normalised module name of a blacklist/install/softdep line (None for others or bad names)."""
        if self.kind is None:
            return None
        try:
            return alias_normalize(self.words[1])
        except ValueError:
            return None  # kmod rejects the line ("ignoring bad line")

    @property
    def stops_loading(self) -> bool:
        """An ``install`` line whose command only succeeds or fails without loading anything."""
        if self.kind != "install":
            return False
        command = _shell_words(self.rest)
        return len(command) == 1 and os.path.basename(command[0]) in _STOPPING_COMMANDS

    @property
    def no_softdeps(self) -> bool:
        """A ``softdep`` line that names no module (``softdep NAME pre:``).

        libkmod never runs the install command of a module that has softdeps (its probe
        list sets ``ignorecmd``), and it takes the first softdep line that matches, so this
        line, sorted before ``modules.softdep``, lets ``install NAME /bin/false`` work.
        """
        if self.kind != "softdep":
            return False
        marker = False
        for word in self.rest.split():
            if word in ("pre:", "post:"):
                marker = True
            elif marker:
                return False  # words before any pre:/post: are ignored by kmod
        return True

    @property
    def is_entry(self) -> bool:
        """A line that blacklists or stops loading a module: what remove/exclusive drop."""
        return self.key is not None and (self.kind == "blacklist" or self.stops_loading
                                         or self.no_softdeps)

    @property
    def is_disable(self) -> bool:
        """``install NAME /bin/false`` (or another ``false``): every load fails."""
        return self.stops_loading and os.path.basename(_shell_words(self.rest)[0]) == "false"


def _shell_words(command: str) -> list[str]:
    """The words of a simple command up to a shell comment (a word starting with '#')."""
    words = command.split()
    for index, word in enumerate(words):
        if word.startswith("#"):
            return words[:index]
    return words


def parse_lines(text: str) -> list[ConfLine]:
    """Split text into logical lines exactly as libkmod joins and tokenises them."""
    return [_make_line(raw, logical) for _lineno, logical, raw in logical_lines(text)]


def _make_line(raw: str, logical: str) -> ConfLine:
    if not logical or logical[0] == "#":
        return ConfLine(raw, [])
    words = [w for w in _BLANKS.split(logical) if w]
    tokens = LineTokens(logical)
    tokens.next()
    tokens.next()
    return ConfLine(raw, words, tokens.rest() or "")


class ModprobeConfEditor:
    """Ensure or remove blacklist/disable entries in the text of one modprobe.d file."""

    def __init__(self, text: str | None) -> None:
        """text is None when the file does not exist yet; a new file gets a header comment."""
        self.created = text is None
        self.lines = parse_lines(text or "")

    def text(self) -> str:
        return "".join(line.raw for line in self.lines)

    def blacklisted(self) -> list[str]:
        """Normalised names with a ``blacklist`` line, in file order."""
        return _unique(line.key for line in self.lines if line.kind == "blacklist" and line.key)

    def disabled(self) -> list[str]:
        """Normalised names with an ``install NAME /bin/false``-style line, in file order."""
        return _unique(line.key for line in self.lines if line.is_disable and line.key)

    def managed(self) -> list[str]:
        """Normalised names with any line this editor adds or removes, in file order."""
        return _unique(line.key for line in self.lines if line.is_entry and line.key)

    def ensure(self, name: str, mode: str) -> None:
        """The file blacklists name; with mode 'disable' it also makes every load fail.

        'disable' adds ``install NAME /bin/false`` and ``softdep NAME pre:`` (see
        ``no_softdeps``) and drops other install and softdep lines for the name: libkmod takes
        the first line that matches, so any of them could shadow ours. With 'blacklist',
        those disable lines are dropped, so switching modes works.
        """
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        key = module_key(check_module_name(name))
        if not any(line.kind == "blacklist" and line.key == key for line in self.lines):
            self._add(key, f"blacklist {name}\n")
        if mode == DISABLE:
            self._ensure_one(key, "install", f"install {name} {FALSE_COMMAND}\n")
            self._ensure_one(key, "softdep", f"softdep {name} pre:\n")
        else:
            self._drop(line for line in self.lines if line.key == key and line.is_entry
                       and line.kind != "blacklist")

    def _ensure_one(self, key: str, kind: str, raw: str) -> None:
        """Exactly one disabling line of this kind for the module: an existing one or raw."""
        lines = [line for line in self.lines if line.kind == kind and line.key == key]
        keep = next((line for line in lines if line.is_disable or line.no_softdeps), None)
        self._drop(line for line in lines if line is not keep)
        if keep is None:
            self._add(key, raw)

    def remove(self, name: str) -> None:
        """No blacklist, load-stopping install or empty softdep line for name is left;
        custom install commands and real softdeps are not ours to judge and stay."""
        key = module_key(check_module_name(name))
        self._drop(line for line in self.lines if line.is_entry and line.key == key)

    def keep_only(self, names: t.Iterable[str]) -> None:
        """Remove the entries of every module not in names."""
        keys = {module_key(check_module_name(n)) for n in names}
        self._drop(line for line in self.lines if line.is_entry and line.key not in keys)

    def _drop(self, lines: t.Iterable[ConfLine]) -> None:
        gone = {id(line) for line in lines}
        self.lines = [line for line in self.lines if id(line) not in gone]

    def _add(self, key: str, raw: str) -> None:
        """Put a new line after the last entry for the same module, else at the end."""
        if self.created:
            self.lines.append(ConfLine(NEW_FILE_HEADER, []))
            self.created = False
        if self.lines and not self.lines[-1].raw.endswith("\n"):
            last = self.lines[-1]
            self.lines[-1] = dataclasses.replace(last, raw=last.raw + "\n")
        new = parse_lines(raw)[0]
        at = len(self.lines)
        for index, line in enumerate(self.lines):
            if line.key == key:
                at = index + 1
        self.lines.insert(at, new)


def _unique(items: t.Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def edit_blacklist(text: str | None, names: t.Sequence[str], state: str, mode: str = BLACKLIST,
                   exclusive: bool = False) -> str:
    """The new text of a modprobe.d file (None: it does not exist) for kmod_blacklist's options.

    Every name is checked before anything is edited, so one bad name changes nothing.
    """
    for name in names:
        check_module_name(name)
    if exclusive and state != "present":
        raise KmodError("exclusive=true needs state=present: it keeps only the listed modules")
    editor = ModprobeConfEditor(text)
    if exclusive:
        editor.keep_only(names)
    for name in names:
        if state == "present":
            editor.ensure(name, mode)
        else:
            editor.remove(name)
    return editor.text()
