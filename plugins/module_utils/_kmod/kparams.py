# SPDX-License-Identifier: GPL-3.0-or-later
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""Module parameters as the kernel splits them, and checks for values that reach our files.

The kernel splits a module's option string with ``next_arg`` (kernel/params.c): words are
separated by blanks (the kernel's ``isspace``: space, ``\\t\\n\\v\\f\\r`` and the byte 0xA0)
unless inside double quotes, which toggle; a value that starts with ``"`` loses that quote
and a final one. There is no escape character, so a ``"`` inside a value, a newline or an
unbalanced quote cannot be expressed (an open quote would swallow every later option).
``format_params`` writes what can be expressed so that the kernel gets exactly the values
asked for; ``check_params`` refuses everything else with a message naming the option.
"""

from __future__ import annotations

import re
import typing as t
import unicodedata

from .errors import KmodError

# kernel lib/ctype.c: _S is set for these bytes (0xA0 is Latin-1's no-break space).
_KERNEL_SPACE = frozenset(b" \t\n\v\f\r\xa0")
# Module parameter names are C identifiers (module_param_named can add '.' and '-'); a
# name starting with '-' could be "--", after which the kernel ignores every parameter.
_PARAM_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
# Unicode categories that must never reach a configuration line: controls (\n, \r, \t,
# NUL, U+0085 ...), lone surrogates (not encodable), line and paragraph separators.
_BAD_CATEGORIES = frozenset(("Cc", "Cs", "Zl", "Zp"))

ParamValue = t.Union[str, int, float, bool, None, t.List[t.Any]]


def bad_char(text: str) -> str | None:
    """The first character that cannot stand in a configuration line, if any."""
    for ch in text:
        if ch < " " or ch == "\x7f" or (ch > "\x7f" and unicodedata.category(ch) in _BAD_CATEGORIES):
            return ch
    return None


def check_text(value: object, option: str, what: str = "value") -> str:
    """value as a str that holds no control, surrogate or line-separator character."""
    if not isinstance(value, str):
        raise KmodError(f"Invalid {option}: {what} {value!r} must be a string", option=option)
    ch = bad_char(value)
    if ch is not None:
        raise KmodError(f"Invalid {option}: {what} {value!r} holds the character {_describe(ch)}, "
                        f"which cannot be written to a configuration line", option=option)
    return value


def _describe(ch: str) -> str:
    return f"U+{ord(ch):04X}" + (f" ({unicodedata.name(ch)})" if unicodedata.name(ch, "") else "")


def kernel_args(options: str) -> list[tuple[str, str | None]]:
    """(name, value or None) for each word, exactly as the kernel's parse_args splits them.

    Works on the UTF-8 bytes like the kernel; bytes that are not UTF-8 come back as
    surrogate escapes.
    """
    buf = bytearray(options.encode("utf-8", "surrogateescape")) + b"\0"
    out: list[tuple[str, str | None]] = []
    pos = _skip_spaces(buf, 0)
    while buf[pos]:
        param, value, pos = _next_arg(buf, pos)
        out.append((param, value))
    return out


def _skip_spaces(buf: bytearray, pos: int) -> int:
    while buf[pos] in _KERNEL_SPACE:
        pos += 1
    return pos


def _cstr(buf: bytearray, pos: int) -> str:
    return bytes(buf[pos:buf.index(0, pos)]).decode("utf-8", "surrogateescape")


def _next_arg(buf: bytearray, args: int) -> tuple[str, str | None, int]:
    """kernel/params.c next_arg, byte for byte (buf is NUL-terminated and is modified)."""
    in_quote = quoted = False
    if buf[args] == 0x22:
        args += 1
        in_quote = quoted = True
    i = equals = 0
    while buf[args + i]:
        c = buf[args + i]
        if c in _KERNEL_SPACE and not in_quote:
            break
        if equals == 0 and c == 0x3D:
            equals = i
        if c == 0x22:
            in_quote = not in_quote
        i += 1
    val = None
    if equals:
        buf[args + equals] = 0
        val = args + equals + 1
        if buf[val] == 0x22:
            val += 1
            if buf[args + i - 1] == 0x22:
                buf[args + i - 1] = 0
    if quoted and i > 0 and buf[args + i - 1] == 0x22:
        buf[args + i - 1] = 0
    nxt = args + i
    if buf[nxt]:
        buf[nxt] = 0
        nxt += 1
    param = _cstr(buf, args)
    value = None if val is None else _cstr(buf, val)
    return param, value, _skip_spaces(buf, nxt)


def check_params(options: str, option: str = "params") -> list[tuple[str, str | None]]:
    """The kernel's words of an option string, if every one is a safe NAME[=VALUE].

    Refused: characters that could end a configuration line, unbalanced double quotes
    (the open quote would swallow every option after ours), a word that is not a
    parameter name, a value that still holds a quote, a value cut inside a character.
    """
    check_text(options, option, "string")
    if options.count('"') % 2:
        raise KmodError(f"Invalid {option} {options!r}: unbalanced double quote (the kernel would "
                        f"take every later option as part of this value)", option=option)
    words = kernel_args(options)
    for name, value in words:
        if not _PARAM_NAME.match(name):
            raise KmodError(f"Invalid {option} {options!r}: {name!r} is not a parameter name (the kernel "
                            f"splits NAME=VALUE words at blanks outside double quotes; names are letters, "
                            f"digits, '_', '.' and '-'; quote a value with blanks as NAME=\"a b\")",
                            option=option)
        if value is not None and '"' in value:
            raise KmodError(f"Invalid {option} {options!r}: the value of {name} would keep a double quote "
                            f"(quotes only delimit a whole value, as in {name}=\"a b\")", option=option)
        if value is not None and bad_char(value) is not None:
            raise KmodError(f"Invalid {option} {options!r}: the value of {name} is cut inside a character "
                            f"(the kernel takes the byte 0xA0 as a blank): quote it as {name}=\"...\"",
                            option=option)
    return words


def format_params(params: str | t.Mapping[str, ParamValue] | None, option: str = "params") -> str | None:
    """A params option as the option string the kernel gets, checked (see check_params).

    Dict items become NAME=VALUE words: a value with blanks is quoted (``k="a b"``),
    booleans become 1/0, lists comma-separated arrays, None a bare ``k``.
    """
    if params is None:
        return None
    if isinstance(params, str):
        check_params(params, option)
        return params
    if not isinstance(params, t.Mapping):
        raise KmodError(f"{option} must be a string or a dict, not {type(params).__name__}", option=option)
    words = []
    for key, value in params.items():
        if not isinstance(key, str) or not _PARAM_NAME.match(key):
            raise KmodError(f"Invalid {option}: {key!r} is not a parameter name (letters, digits, '_', "
                            f"'.' and '-', not starting with '.' or '-')", option=option)
        if value is None:
            words.append(key)
            continue
        text = _value_text(key, value, option)
        if '"' in text:
            raise KmodError(f"Invalid {option}: the value of {key} holds a double quote, which the kernel "
                            f"cannot take inside a value", option=option)
        check_text(text, option, f"the value of {key}")
        if _KERNEL_SPACE & set(text.encode("utf-8")):
            text = f'"{text}"'
        words.append(f"{key}={text}")
    return " ".join(words)


def _value_text(key: str, value: object, option: str) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (str, int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        items = []
        for item in value:
            if not isinstance(item, (str, int, float)):
                raise KmodError(f"Invalid {option}: the list value of {key} holds {item!r}; array items "
                                f"are strings, numbers or booleans", option=option)
            text = _value_text(key, item, option)
            if "," in text:
                raise KmodError(f"Invalid {option}: the list value of {key} holds {text!r}; the kernel splits "
                                f"array items at ',', so an item cannot hold one", option=option)
            items.append(text)
        return ",".join(items)
    raise KmodError(f"Invalid {option}: the value of {key} is a {type(value).__name__}; it must be a string, "
                    f"number, boolean, null or list", option=option)


# What /bin/sh would take as syntax in an unquoted word, besides blanks and double quotes.
_SHELL_SPECIAL = frozenset("$`;&|<>()\\'*?[]{}~")


def check_command_options(options: str, command: str, where: str, option: str = "params") -> None:
    """Refuse options that an install command would hand to /bin/sh as syntax.

    modprobe replaces ``$CMDLINE_OPTS`` in an install command with the module's options,
    those from modprobe.d included, and runs the result with /bin/sh: there ``$(...)``,
    ``;`` or a backquote in a value would run commands as root.
    """
    if "$CMDLINE_OPTS" not in command:
        return
    bad = sorted(set(options) & _SHELL_SPECIAL)
    if bad:
        raise KmodError(f"Invalid {option} {options!r}: {where} runs the install command {command!r}, which "
                        f"hands the options to /bin/sh through $CMDLINE_OPTS, where {' '.join(bad)} would be "
                        f"shell syntax", option=option)
