# SPDX-License-Identifier: GPL-3.0-or-later
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""modprobe.d configuration as libkmod reads it (libkmod-config.c, kmod 30 = our oracle).

Every directive keeps the file and line it came from. Lines kmod ignores are ignored here
too, but reported in ``warnings`` as ``file:line: reason``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing as t

from .atomic import read_file
from .confdirs import first_by_basename
from .errors import KmodError
from .generation import KmodGeneration, detect_generation
from .names import alias_normalize, fnmatch
from .paths import KmodPaths

KCMDLINE_MAX = 4095  # libkmod reads /proc/cmdline into a 4096-byte buffer
_C_SPACE = " \t\n\v\f\r"  # C isspace() in the "C" locale


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a directive was written: a config file and its line (0 for the kernel cmdline)."""

    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" if self.line else self.path


@dataclasses.dataclass(frozen=True)
class Alias:
    pattern: str
    modname: str
    source: Source


@dataclasses.dataclass(frozen=True)
class Options:
    modname: str
    options: str
    source: Source


@dataclasses.dataclass(frozen=True)
class Command:
    """An ``install`` or ``remove`` directive; modname may be an fnmatch pattern."""

    modname: str
    command: str
    source: Source


@dataclasses.dataclass(frozen=True)
class Blacklist:
    modname: str
    source: Source


@dataclasses.dataclass(frozen=True)
class SoftDep:
    modname: str
    pre: tuple[str, ...]
    post: tuple[str, ...]
    source: Source


@dataclasses.dataclass(frozen=True)
class WeakDep:
    modname: str
    deps: tuple[str, ...]
    source: Source


def _is_conf_name(name: str, suffixes: tuple[str, ...] = (".conf", ".alias")) -> bool:
    # conf_files_filter_out: hidden files are skipped; kmod <= 32 also accepts the legacy
    # '.alias' suffix, kmod >= 33 only '.conf' (KmodGeneration.conf_suffixes).
    return not name.startswith(".") and len(name) >= 6 and name.endswith(suffixes)


def config_files(paths: KmodPaths, config_paths: t.Sequence[str] | None = None,
                 warnings: list[str] | None = None, generation: KmodGeneration | None = None,
                 present: t.Iterable[str] = ()) -> list[str]:
    """The files libkmod parses, in its order: one list sorted by basename, the first
    file seen under a basename wins (modules.softdep/weakdep first, then the dirs in order).

    ``config_paths`` replaces the modprobe.d directories like ``modprobe -C``; a path that
    is a regular file is taken under its own basename. ``generation``: default detected.
    ``present``: files counted as existing in their directories (texts not written yet).
    """
    gen = generation if generation is not None else detect_generation(paths)
    seed = {name: os.path.join(paths.moddir, name)
            for name in ("modules.softdep", "modules.weakdep")[:2 if gen.weakdep else 1]}
    dirs = paths.modprobe_dirs if config_paths is None else list(config_paths)
    return first_by_basename(dirs, lambda name: _is_conf_name(name, gen.conf_suffixes), seed=seed,
                             present=present, resolve=paths.resolve, warnings=warnings)


def logical_lines(text: str) -> t.Iterator[tuple[int, str, str]]:
    """(first physical line number, line, raw text) as kmod's freadline_wrapped joins them:
    backslash-newline continues a line, any other backslash escape keeps just the char,
    and the line ends at a NUL byte (libkmod handles it as a C string).
    ``raw`` is the physical text the line came from, its newline included, so that an
    editor can keep lines it does not change byte for byte.

    A backslash at the very end of the file is dropped, as kmod 31+ does (kmod 30 stores
    getc's EOF there as a 0xFF byte: a bug we do not copy; ``ends_open`` tells editors).
    """
    lineno = 1
    for match in _LOGICAL.finditer(text):
        raw = match.group()
        if not raw:
            break  # the empty match at the end of the text
        body = match.group(1)
        if "\\" in body:
            # Every newline left in body was escaped (a continuation): it goes too.
            body = _ESCAPE.sub(r"\1", body).replace("\n", "")
        if "\0" in body:
            body = body[:body.index("\0")]
        yield lineno, body, raw
        lineno += raw.count("\n")


# A logical line: plain chars, escapes (a backslash and any char, a newline too: that is a
# continuation; or a backslash at the very end), then its newline or the end of the text.
_LOGICAL = re.compile(r"((?:[^\\\n]+|\\.|\\\Z)*)(?:\n|\Z)", re.DOTALL)
_ESCAPE = re.compile(r"\\(.?)", re.DOTALL)


def _odd_backslashes(text: str, end: int) -> bool:
    """Whether an odd run of backslashes ends just before text[end] (it escapes that char).
    A run always starts fresh: whatever precedes it was a plain or an escaped char."""
    k = end
    while k > 0 and text[k - 1] == "\\":
        k -= 1
    return (end - k) % 2 == 1


def ends_open(raw: str) -> str:
    """How the raw text of a file's last logical line ends: 'closed' (its newline ends it),
    'unterminated' (no newline: appending one keeps its meaning), 'continued' (a final
    backslash-newline: one more newline ends it, same meaning) or 'backslash' (a lone final
    backslash: anything appended would change it, so new lines go before it)."""
    if raw.endswith("\n"):
        return "continued" if _odd_backslashes(raw, len(raw) - 1) else "closed"
    return "backslash" if _odd_backslashes(raw, len(raw)) else "unterminated"


_TOKEN = re.compile("[^ \t]+")


class LineTokens:
    """strtok_r over ' ' and '\\t' with libkmod's "rest of line" (strtok_r(NULL, "\\0"))."""

    def __init__(self, line: str) -> None:
        self.line = line
        self.pos = 0

    def next(self) -> str | None:
        match = _TOKEN.search(self.line, self.pos)
        if match is None:
            self.pos = len(self.line)
            return None
        self.pos = match.end() + 1  # strtok_r overwrites the one separator that ended the token
        return match.group()

    def rest(self) -> str | None:
        rest = self.line[self.pos:]
        self.pos = len(self.line)
        return rest or None


def _underscores(s: str | None) -> str | None:
    if s is None:
        return None
    try:
        return alias_normalize(s)
    except ValueError:
        return None


def _split_space(s: str) -> list[str]:
    out: list[str] = []
    cur: list[str] = []
    for c in s:
        if c in _C_SPACE:
            if cur:
                out.append("".join(cur))
                cur = []
        else:
            cur.append(c)
    if cur:
        out.append("".join(cur))
    return out


def _parse_softdep(rest: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    pre: list[str] = []
    post: list[str] = []
    mode: list[str] | None = None
    for tok in _split_space(rest):
        if tok == "pre:":
            mode = pre
        elif tok == "post:":
            mode = post
        elif mode is not None:
            mode.append(tok)  # names before any 'pre:'/'post:' are ignored, as in kmod
    return tuple(pre), tuple(post)


@dataclasses.dataclass
class ModprobeConfig:
    """All directives in libkmod's order (files in basename order, kernel cmdline last)."""

    aliases: list[Alias] = dataclasses.field(default_factory=list)
    options: list[Options] = dataclasses.field(default_factory=list)
    install: list[Command] = dataclasses.field(default_factory=list)
    remove: list[Command] = dataclasses.field(default_factory=list)
    blacklist: list[Blacklist] = dataclasses.field(default_factory=list)
    softdeps: list[SoftDep] = dataclasses.field(default_factory=list)
    weakdeps: list[WeakDep] = dataclasses.field(default_factory=list)
    files: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    generation: KmodGeneration = dataclasses.field(default_factory=KmodGeneration)

    @classmethod
    def load(cls, paths: KmodPaths, cmdline: str | None = None,
             config_paths: list[str] | None = None,
             generation: KmodGeneration | None = None,
             texts: t.Mapping[str, str] | None = None) -> "ModprobeConfig":
        """Read the configuration of ``paths`` like libkmod's kmod_config_new.

        ``cmdline`` is the kernel command line to take ``mod.param=value`` options and
        ``modprobe.blacklist=`` from; None reads ``/proc/cmdline`` under root (if any),
        "" means none. ``config_paths`` replaces the modprobe.d directories (``modprobe -C``).
        ``texts``: file path -> text read in place of that file (which need not exist yet),
        as libkmod will read it once written; it counts only where the file would.
        """
        texts = texts or {}
        config = cls(generation=generation if generation is not None else detect_generation(paths))
        for path in config_files(paths, config_paths, config.warnings, config.generation, texts):
            if path in texts:
                config.files.append(path)
                config.parse(texts[path], path)
                continue
            # Read inside root (a symlink to /etc/shadow is ROOT/etc/shadow), regular
            # files only: a FIFO or device would block or never end.
            try:
                data = read_file(path)
            except KmodError as exc:
                config.warnings.append(f"{path}: skipped: {exc.msg}")
                continue
            if data is None:
                continue  # libkmod skips files it cannot open, silently
            text = data.decode("utf-8", "surrogateescape")
            config.files.append(path)
            config.parse(text, path)
        cmdline_path = paths.proc("cmdline")
        if cmdline is None:
            try:
                data = read_file(cmdline_path, limit=KCMDLINE_MAX)
            except KmodError:
                data = None
            cmdline = (data or b"").decode("utf-8", "surrogateescape")
        config.parse_kcmdline(cmdline, Source(cmdline_path, 0))
        return config

    def parse(self, text: str, path: str) -> None:
        """Add the directives of one file's text (kmod_config_parse)."""
        for lineno, line, _raw in logical_lines(text):
            if not line or line[0] == "#":
                continue
            tokens = LineTokens(line)
            cmd = tokens.next()
            if cmd is None:
                continue
            src = Source(path, lineno)
            if not self._directive(cmd, tokens, src):
                self.warnings.append(f"{src}: ignoring bad line starting with '{cmd}'")

    def _directive(self, cmd: str, tokens: LineTokens, src: Source) -> bool:
        if cmd == "alias":
            pattern = _underscores(tokens.next())
            modname = _underscores(tokens.next())
            if pattern is None or modname is None:
                return False
            self.aliases.append(Alias(pattern, modname, src))
        elif cmd == "blacklist":
            modname = _underscores(tokens.next())
            if modname is None:
                return False
            self.blacklist.append(Blacklist(modname, src))
        elif cmd in ("options", "install", "remove", "softdep") or (cmd == "weakdep" and self.generation.weakdep):
            modname = _underscores(tokens.next())
            rest = tokens.rest()
            if modname is None or rest is None:
                return False
            if cmd == "options":
                self.options.append(Options(modname, rest.replace("\t", " "), src))
            elif cmd == "softdep":
                self.softdeps.append(SoftDep(modname, *_parse_softdep(rest), src))
            elif cmd == "weakdep":
                self.weakdeps.append(WeakDep(modname, tuple(_split_space(rest)), src))
            else:
                getattr(self, cmd).append(Command(modname, rest, src))
        elif cmd in ("include", "config"):
            self.warnings.append(f"{src}: command {cmd} is deprecated and not parsed anymore")
        else:
            return False
        return True

    def parse_kcmdline(self, cmdline: str, src: Source) -> None:
        """Options and blacklist from the kernel command line (kmod_config_parse_kcmdline)."""
        b = bytearray(cmdline.encode("utf-8", "surrogateescape")[:KCMDLINE_MAX]) + b"\0"

        def cstr(off: int) -> str:
            return b[off:b.index(0, off)].decode("utf-8", "surrogateescape")

        MODNAME, PARAM, VALUE, IGNORE = range(4)
        state, modname, quote_start = MODNAME, 0, -1
        param = value = -1  # like the C pointers, these survive from one token to the next
        quoted = False
        for p in range(len(b)):
            c = b[p]
            complete = False
            if c == 0x22:  # '"'
                quoted = not quoted
                if quoted and state == MODNAME and p == modname:
                    quote_start, modname = p, p + 1
                elif state != VALUE:
                    state = IGNORE
            elif c == 0 or chr(c) in _C_SPACE:
                if quoted and state == VALUE:
                    pass
                elif quoted:
                    state = IGNORE
                elif state in (VALUE, PARAM):
                    b[p] = 0
                    complete = True
                else:
                    modname, state, quote_start = p + 1, MODNAME, -1
            elif c == 0x2E:  # '.'
                if state == MODNAME:
                    b[p] = 0
                    param, state = p + 1, PARAM
                elif state == PARAM:
                    state = IGNORE
            elif c == 0x3D:  # '='
                if state == PARAM:
                    value, state = p + 1, VALUE
                elif state == MODNAME:
                    state = IGNORE
            if complete:
                if 0 <= quote_start < modname:
                    # A bootloader quoted the whole token: "mod.p=v w" becomes p="v w".
                    b[quote_start:value - 1] = b[modname:value]
                    value, modname, param = value - 1, modname - 1, param - 1
                    b[value] = 0x22
                self._kcmdline_option(cstr(modname), cstr(param), cstr(value) if value >= 0 else None, src)
                modname, state, quote_start = p + 1, MODNAME, -1

    def _kcmdline_option(self, modname: str, param: str, value: str | None, src: Source) -> None:
        if modname == "modprobe" and param.startswith("blacklist="):
            for blacklisted in (value or "").split(","):
                self.blacklist.append(Blacklist(blacklisted, src))
            return
        name = _underscores(modname)
        if name is None:
            self.warnings.append(f"{src}: ignoring bad option on kernel command line while "
                                 f"parsing module name: '{modname}'")
            return
        self.options.append(Options(name, param, src))

    # Queries with libkmod's matching rules.

    def options_for(self, name: str, alias: str | None = None) -> str | None:
        """kmod_module_get_options: every options entry for the name (or the alias it was
        reached by), joined by single spaces; None when there are none."""
        found = [o.options for o in self.options
                 if o.options and (o.modname == name or (alias is not None and o.modname == alias))]
        return " ".join(found) if found else None

    def install_for(self, name: str) -> Command | None:
        """The first install entry whose pattern fnmatches the module name."""
        return next((c for c in self.install if fnmatch(c.modname, name)), None)

    def remove_for(self, name: str) -> Command | None:
        return next((c for c in self.remove if fnmatch(c.modname, name)), None)

    def softdep_for(self, name: str) -> SoftDep | None:
        """The first softdep entry whose pattern fnmatches the module name."""
        return next((s for s in self.softdeps if fnmatch(s.modname, name)), None)

    def weakdep_for(self, name: str) -> WeakDep | None:
        return next((w for w in self.weakdeps if fnmatch(w.modname, name)), None)

    def is_blacklisted(self, name: str) -> bool:
        return any(b.modname == name for b in self.blacklist)
