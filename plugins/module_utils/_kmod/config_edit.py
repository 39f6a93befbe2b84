# SPDX-License-Identifier: GPL-3.0-or-later
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""The one editor of modprobe.d and modules-load.d text (no I/O): line-preserving edits of
blacklist, disable (install) and options entries, and modules-load.d lists.

A file is read the way libkmod reads it (``freadline_wrapped`` + ``kmod_config_parse``):
``\\``+newline joins physical lines, any other ``\\``+char is that char, a logical line
whose first character is ``#`` is a comment, and words are split on space and tab.
Every logical line keeps its original text, so lines the editor does not touch come
out byte for byte as they went in.
"""

from __future__ import annotations

import os
import re
import typing as t

from .config import ends_open, logical_lines
from .errors import InvalidNameError, KmodError
from .names import alias_normalize, validate_name

BLACKLIST = "blacklist"
DISABLE = "disable"
MODES = (BLACKLIST, DISABLE)

# The command that makes every load of a module fail, explicit or as a dependency.
FALSE_COMMAND = "/bin/false"
# Install commands that only stop a module from loading (the usual "disable" idioms).
_STOPPING_COMMANDS = frozenset(("false", "true"))
# What a module name in a line we write may hold: every module file name of the real
# trees does. Anything else (blanks, newlines, '#', '\\', globs, '/', non-ASCII) could
# change the line or match more than the one module, so it is refused.
_MODULE_NAME = re.compile(r"[A-Za-z0-9_-]+\Z")

_BLANKS = re.compile("[ \t]+")
_REST = re.compile("[ \t]*[^ \t]+[ \t]+[^ \t]+[ \t](.*)", re.DOTALL)

NEW_FILE_HEADER = "# Managed by kernel.kmod.kmod_blacklist: blacklisted and disabled kernel modules.\n"
# The kinds of lines ensure/remove manage (options lines are edit_options' business).
_ENTRY_KINDS = frozenset(("blacklist", "install", "softdep"))
_KINDS = _ENTRY_KINDS | {"options"}
_KIND_PREFIXES = tuple(_KINDS)


def check_module_name(name: object, option: str = "name") -> str:
    """The name if it can stand in a ``blacklist``/``install``/``options`` line, else InvalidNameError."""
    name = validate_name(name)
    if not _MODULE_NAME.match(name):
        raise InvalidNameError(
            f"Invalid module name {name!r} in {option}: a module name written to a configuration file "
            f"holds only ASCII letters, digits, '_' and '-'", name=name)
    return name


def module_key(name: str) -> str:
    """How kmod compares names in modprobe.d: '-' and '_' are the same."""
    return name.replace("-", "_")


class ConfLine:
    """One logical line: its original text (all physical lines) and the words kmod sees.

    Everything an edit asks about a line is computed once, here: editing a big file asks
    the same questions of every line many times.
    """

    __slots__ = ("raw", "logical", "_words", "rest", "kind", "key", "stops_loading", "no_softdeps",
                 "is_entry", "is_disable", "dead", "after")

    def __init__(self, raw: str, logical: str, words: list[str] | None = None, rest: str = "",
                 head: tuple[str, str] | None = None) -> None:
        """words: None to split logical when asked; head: the first two words when the
        caller found them (then words are split only when asked)."""
        self.raw = raw
        self.logical = logical  # "" for a comment
        self._words = words
        # Text after the single blank that ended the module name, as strtok_r(…, "\0") gives it.
        self.rest = rest
        self.dead = False  # dropped by an edit
        self.after: list[ConfLine] | None = None  # new lines an edit puts right after this one
        if head is None:
            head = (words[0], words[1] if len(words) > 1 else "") if words else ("", "")
        self.kind = kind = _kind(head, rest)
        self.key = None
        if kind is None:  # most lines of a big file: nothing more to learn
            self.stops_loading = self.no_softdeps = self.is_entry = self.is_disable = False
            return
        self.key = _normalize(head[1])
        command = _shell_words(rest) if self.kind == "install" else []
        # An install line whose command only succeeds or fails without loading anything.
        self.stops_loading = len(command) == 1 and os.path.basename(command[0]) in _STOPPING_COMMANDS
        self.no_softdeps = self.kind == "softdep" and _names_no_module(rest)
        # A line that blacklists or stops loading a module: what remove/exclusive drop.
        self.is_entry = self.key is not None and self.kind in _ENTRY_KINDS and (
            self.kind == "blacklist" or self.stops_loading or self.no_softdeps)
        # install NAME /bin/false (or another false): every load fails.
        self.is_disable = self.stops_loading and os.path.basename(command[0]) == "false"

    @property
    def words(self) -> list[str]:
        """The words kmod splits the line into ([] for blank lines and comments)."""
        if self._words is None:
            self._words = [w for w in _BLANKS.split(self.logical) if w]
        return self._words

    def __repr__(self) -> str:
        return f"ConfLine({self.raw!r})"


def _normalize(name: str) -> str | None:
    if "[" not in name and "]" not in name:
        return name.replace("-", "_")
    try:
        return alias_normalize(name)
    except ValueError:
        return None  # kmod rejects the line ("ignoring bad line")


def _kind(head: tuple[str, str], rest: str) -> str | None:
    """'blacklist', 'install', 'softdep' or 'options' when kmod would take the line as one
    (head: its first two words, "" for none)."""
    first, name = head
    if first == "blacklist" and name:
        return "blacklist"
    if first in ("install", "softdep", "options") and name and rest:
        return first
    return None


def _names_no_module(rest: str) -> bool:
    """A ``softdep NAME`` rest that names no module (``softdep NAME pre:``).

    libkmod never runs the install command of a module that has softdeps (its probe
    list sets ``ignorecmd``), and it takes the first softdep line that matches, so this
    line, sorted before ``modules.softdep``, lets ``install NAME /bin/false`` work.
    """
    marker = False
    for word in rest.split():
        if word in ("pre:", "post:"):
            marker = True
        elif marker:
            return False  # words before any pre:/post: are ignored by kmod
    return True


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
        return ConfLine(raw, "", [])
    if not logical.lstrip(" \t").startswith(_KIND_PREFIXES):
        return ConfLine(raw, logical)  # words only when asked for: most lines of a big file
    words = [w for w in _BLANKS.split(logical) if w]
    if words[0] not in _KINDS:
        return ConfLine(raw, logical, words)
    # strtok_r(…, "\0") after two tokens: the text after the one blank that ends the second
    match = _REST.match(logical)
    return ConfLine(raw, logical, words, match.group(1) if match else "")


# Without backslashes and NULs every physical line is a logical line: a line can be an
# entry only if its first word is one of these (kmod splits words on blanks only).
_ENTRY_LINE = re.compile(r"^[ \t]*(blacklist|install|softdep|options)[ \t]+([^ \t\n]*)(?:[ \t]([^\n]*))?\n?", re.M)
_WORDS_LINE = re.compile(r"^(?!#)[ \t]*[^ \t\n]", re.M)


def _parse_for_edit(text: str) -> list[ConfLine]:
    """parse_lines, except that a run of lines no edit can touch is one ConfLine (its
    words: one placeholder when some line of it has words, else none). Only for texts
    without backslashes and NULs; others are parsed line by line."""
    if "\\" in text or "\0" in text:
        return parse_lines(text)
    out: list[ConfLine] = []
    pos = 0
    for match in _ENTRY_LINE.finditer(text):
        if match.start() > pos:
            out.append(_chunk(text[pos:match.start()]))
        raw = match.group()
        first, name, rest = match.groups()
        # rest: after the one blank that ends the name, as strtok_r(…, "\0") leaves it
        out.append(ConfLine(raw, raw[:-1] if raw.endswith("\n") else raw, None, rest or "", (first, name)))
        pos = match.end()
    if pos < len(text):
        out.append(_chunk(text[pos:]))
    return out


def _chunk(raw: str) -> ConfLine:
    return ConfLine(raw, "", ["(lines)"] if _WORDS_LINE.search(raw) else [])


def escape_line(text: str) -> str:
    """Text as it must be written so that libkmod's line reader gives it back: a backslash
    is doubled (a lone one would escape the next character or join the next line)."""
    return text.replace("\\", "\\\\")


class ConfText:
    """The lines of one modprobe.d file, edited in place: lines are dropped or new lines
    put after an existing one or at the end, each in constant time, and ``text()`` writes
    the result so that no line the edit did not touch changes its meaning.

    A new line is never glued to the one before it: when the file's last line has no
    newline, or ends in a backslash-newline (it continues into the end of the file), one
    newline ends it first, which keeps its meaning; when it ends in a lone backslash,
    kmod 30 reads a 0xFF byte there and kmod 31+ nothing, and no appended text keeps
    that, so new lines go before it.
    """

    def __init__(self, text: str | None, header: str = "") -> None:
        """text is None when the file does not exist yet: a new file gets header first."""
        self.lines = _parse_for_edit(text or "")
        self.header = header if text is None else ""
        self.tail: list[ConfLine] = []
        last = self.lines[-1] if self.lines else None
        # The last line when nothing can follow it (see above); it is kept last.
        self.open_end = last if last is not None and ends_open(last.raw) == "backslash" else None

    def drop(self, lines: t.Iterable[ConfLine]) -> None:
        for line in lines:
            line.dead = True

    def add(self, raw: str, anchor: ConfLine | None = None) -> ConfLine:
        """A new line (raw ends in a newline) after anchor, or at the end of the file."""
        new = parse_lines(raw)[0]
        if anchor is None or anchor is self.open_end:
            if self.header and not self.tail:
                self.tail.append(parse_lines(self.header)[0])
            self.tail.append(new)
        else:
            if anchor.after is None:
                anchor.after = []
            anchor.after.append(new)
        return new

    def alive(self) -> t.Iterator[ConfLine]:
        """Every line of the result, in file order."""
        for line in self._walk():
            if not line.dead:
                yield line

    def _walk(self) -> t.Iterator[ConfLine]:
        for lines in (self.lines, self.tail):
            for line in lines:
                if line is self.open_end:
                    continue
                yield line
                if line.after:
                    yield from _followers(line)
        if self.open_end is not None:
            yield self.open_end

    def text(self) -> str:
        out: list[str] = []
        last = self.lines[-1] if self.lines else None
        # Only the file's last original line can end without closing itself.
        last_open = last is not None and ends_open(last.raw) in ("unterminated", "continued")
        pending = False
        for line in self._walk():
            if line.dead:
                continue
            if pending:
                out.append("\n")
                pending = False
            out.append(line.raw)
            if line is last:
                pending = last_open
        return "".join(out)


def _followers(line: ConfLine) -> t.Iterator[ConfLine]:
    """The new lines after line, each followed by its own, depth first (no recursion)."""
    stack = [iter(line.after or ())]
    while stack:
        follower = next(stack[-1], None)
        if follower is None:
            stack.pop()
            continue
        yield follower
        if follower.after:
            stack.append(iter(follower.after))


class ModprobeConfEditor:
    """Ensure or remove blacklist/disable entries in the text of one modprobe.d file.

    Lines are indexed by module once, so each name costs only its own lines.
    """

    def __init__(self, text: str | None) -> None:
        """text is None when the file does not exist yet; a new file gets a header comment."""
        self.conf = ConfText(text, NEW_FILE_HEADER)
        self.lines = self.conf.lines
        self.by_key: dict[str, list[ConfLine]] = {}
        for line in self.lines:
            if line.key is not None and line.kind in _ENTRY_KINDS:
                self.by_key.setdefault(line.key, []).append(line)

    def text(self) -> str:
        return self.conf.text()

    def _keys(self, wanted: t.Callable[[ConfLine], bool]) -> list[str]:
        return _unique(line.key for line in self.conf.alive() if line.key is not None
                       and line.kind in _ENTRY_KINDS and wanted(line))

    def blacklisted(self) -> list[str]:
        """Normalised names with a ``blacklist`` line, in file order."""
        return self._keys(lambda line: line.kind == "blacklist")

    def disabled(self) -> list[str]:
        """Normalised names with an ``install NAME /bin/false``-style line, in file order."""
        return self._keys(lambda line: line.is_disable)

    def managed(self) -> list[str]:
        """Normalised names with any line this editor adds or removes, in file order."""
        return self._keys(lambda line: line.is_entry)

    def _lines(self, key: str) -> list[ConfLine]:
        return [line for line in self.by_key.get(key, ()) if not line.dead]

    def _trusted(self, line: ConfLine) -> bool:
        # kmod 30 and 31 read a line ending in a lone backslash differently: it does not
        # count as an entry we can rely on (remove still drops it).
        return line is not self.conf.open_end

    def ensure(self, name: str, mode: str) -> None:
        """The file blacklists name; with mode 'disable' it also makes every load fail.

        'disable' adds ``install NAME /bin/false`` and ``softdep NAME pre:`` (see
        ``_names_no_module``) and drops other install and softdep lines for the name:
        libkmod takes the first line that matches, so any of them could shadow ours. With
        'blacklist', those disable lines are dropped, so switching modes works.
        """
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        key = module_key(check_module_name(name))
        if not any(line.kind == "blacklist" and self._trusted(line) for line in self._lines(key)):
            self._add(key, f"blacklist {name}\n")
        if mode == DISABLE:
            self._ensure_one(key, "install", f"install {name} {FALSE_COMMAND}\n")
            self._ensure_one(key, "softdep", f"softdep {name} pre:\n")
        else:
            self.conf.drop([line for line in self._lines(key) if line.is_entry and line.kind != "blacklist"])

    def _ensure_one(self, key: str, kind: str, raw: str) -> None:
        """Exactly one disabling line of this kind for the module: an existing one or raw."""
        lines = [line for line in self._lines(key) if line.kind == kind]
        keep = next((line for line in lines if (line.is_disable or line.no_softdeps) and self._trusted(line)),
                    None)
        self.conf.drop(line for line in lines if line is not keep)
        if keep is None:
            self._add(key, raw)

    def remove(self, name: str) -> None:
        """No blacklist, load-stopping install or empty softdep line for name is left;
        custom install commands and real softdeps are not ours to judge and stay."""
        key = module_key(check_module_name(name))
        self.conf.drop([line for line in self._lines(key) if line.is_entry])

    def keep_only(self, names: t.Iterable[str]) -> None:
        """Remove the entries of every module not in names."""
        keys = {module_key(check_module_name(n)) for n in names}
        for key, lines in self.by_key.items():
            if key not in keys:
                self.conf.drop(line for line in lines if line.is_entry)

    def _add(self, key: str, raw: str) -> None:
        """Put a new line after the last entry for the same module, else at the end."""
        lines = self.by_key.setdefault(key, [])
        anchor = next((line for line in reversed(lines) if self._trusted(line)), None)
        lines.append(self.conf.add(raw, anchor))


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


def edit_options(text: str | None, module: str, options: str | None, header: str = "") -> str | None:
    """The new text of a module's own modprobe.d file: its ``options MODULE`` lines replaced
    by one with options (escaped for libkmod's reader), or all removed when options is
    None; None when nothing but comments would be left. The first such line is replaced
    in place; other lines keep their bytes and meaning."""
    key = module_key(check_module_name(module))
    conf = ConfText(text, header)
    ours = [line for line in conf.lines if line.kind == "options" and line.key == key]
    wanted = f"options {module} {escape_line(options)}\n" if options else None
    if wanted and len(ours) == 1 and ours[0].raw == wanted:
        return text
    conf.drop(ours)
    if wanted:
        conf.add(wanted, ours[0] if ours else None)
        return conf.text()
    if not any(line.words for line in conf.alive()):
        return None
    return conf.text()


# --- modules-load.d ------------------------------------------------------------------------
# systemd-modules-load reads lines ended by "\n", "\r" or NUL, strips blanks, and skips
# empty lines and comments ('#' or ';' first).
_LOAD_LINE_ENDS = re.compile("[\r\0]")
_LOAD_BLANKS = " \t\n\r"


def _load_entries(line: str) -> list[str]:
    """The names systemd-modules-load takes from one newline-ended line."""
    out = []
    for part in _LOAD_LINE_ENDS.split(line.rstrip("\n")):
        part = part.strip(_LOAD_BLANKS)
        if part and part[0] not in "#;":
            out.append(part)
    return out


def _load_key(name: str) -> str:
    try:
        return alias_normalize(name)
    except ValueError:
        return name


def edit_modules_load(text: str | None, module: str, present: bool, header: str = "") -> str | None:
    """The new text of a modules-load.d file (None: remove it) with ``module`` listed or not.

    One module name per line; '#' and ';' start comments. Any line systemd reads our
    module from will do; a line is ours to remove when systemd reads exactly our module
    from it (one with a carriage return inside also names something else). ``header``
    opens a new file.
    """
    module = check_module_name(module)
    parts = (text or "").split("\n")
    lines = [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    if present:
        if any(module in (_load_key(n) for n in _load_entries(ln)) for ln in lines):
            return text
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        return "".join(lines or [header]) + f"{module}\n"
    keep = [ln for ln in lines if [_load_key(n) for n in _load_entries(ln)] != [module]]
    return "".join(keep) if any(_load_entries(ln) for ln in keep) else None
