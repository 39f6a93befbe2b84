# SPDX-License-Identifier: GPL-3.0-or-later
"""Hostile input against the files we write.

Injection: no value given as params or name can form a second line or directive in a
modprobe.d or modules-load.d file; what can be expressed round-trips, checked with
kmod's own modprobe on a real tree and the kernel's parameter splitting (an independent
port of kernel/params.c below). Neighbours: an edit never changes what the lines we do
not own mean, checked with kmod's ``modprobe -c`` before and after. Fuzzing with
hypothesis keeps both true for texts and values nobody thought of.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from fake_kernel import FakeKernel
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.kernel.kmod.plugins.module_utils._kmod.config import ModprobeConfig
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.config_edit import (
    _parse_for_edit, check_module_name, edit_blacklist, edit_modules_load, edit_options, parse_lines)
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.errors import InvalidNameError, KmodError
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.paths import KmodPaths
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.execute import execute
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.plan import MANAGED_HEADER, Planner, format_params

HYPOTHESIS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))

# Characters that end or split a line somewhere: libkmod (\n), systemd (\r, NUL),
# Python's str.splitlines (\v \f \x1c-\x1e U+0085 U+2028 U+2029), the kernel (\t, 0xA0
# byte), plus lone surrogates (not encodable) and other controls.
LINE_BREAKERS = ["\n", "\r", "\r\n", "\v", "\f", "\x00", "\x1c", "\x1e", "\x85", "\u2028", "\u2029",
                 "\t", "\x7f", "\x1b", "\ud800", "\udcff"]


# --- the kernel's view: kernel/params.c parse_args()/next_arg(), ported from the C source ---

def kernel_view(options: str) -> list[tuple[str, str | None]]:
    """What the kernel hands to each parameter for an option string (on its UTF-8 bytes):
    parse_args() calling next_arg(), which cuts the string with NULs in place."""
    buf = bytearray(options.encode("utf-8", "surrogateescape")) + b"\0"
    space = b" \t\n\v\f\r\xa0"  # lib/ctype.c: the bytes marked _S

    def cstr(at: int) -> str:
        return bytes(buf[at:buf.index(0, at)]).decode("utf-8", "surrogateescape")

    out = []
    args = 0
    while buf[args] and buf[args] in space:
        args += 1
    while buf[args]:
        quoted = in_quote = buf[args] == ord('"')
        if quoted:
            args += 1
        i = equals = 0
        while buf[args + i]:
            if buf[args + i] in space and not in_quote:
                break
            if equals == 0 and buf[args + i] == ord("="):
                equals = i
            if buf[args + i] == ord('"'):
                in_quote = not in_quote
            i += 1
        val = None
        if equals:
            buf[args + equals] = 0
            val = args + equals + 1
            if buf[val] == ord('"'):
                val += 1
                if buf[args + i - 1] == ord('"'):
                    buf[args + i - 1] = 0
        if quoted and i > 0 and buf[args + i - 1] == ord('"'):
            buf[args + i - 1] = 0
        following = args + i
        if buf[following]:
            buf[following] = 0
            following += 1
        out.append((cstr(args), None if val is None else cstr(val)))
        args = following
        while buf[args] and buf[args] in space:
            args += 1
    return out


@pytest.mark.parametrize("options, expected", [
    # Documentation/admin-guide/kernel-parameters.rst: double quotes can be used to
    # protect spaces in values, around the value or around the whole parameter.
    ('param="spaces in here"', [("param", "spaces in here")]),
    ('"param=spaces in here"', [("param", "spaces in here")]),
    ("a=1  b c= ", [("a", "1"), ("b", None), ("c", "")]),
    ('a=x"y z"w', [("a", 'x"y z"w')]),
])
def test_kernel_view_port(options, expected):
    assert kernel_view(options) == expected


# --- 1. injection: params ----------------------------------------------------------------

INJECTIONS = [
    {"numdummies": "2\ninstall dummy touch /tmp/x #"},  # the example
    {"numdummies\ninstall dummy touch /tmp/x #": "2"},
    {"numdummies": ["1", "2\ninstall dummy touch /tmp/x"]},
    "numdummies=2\ninstall dummy touch /tmp/x #",
    "numdummies=2\\\ninstall dummy touch /tmp/x",
    {"a": 'x"y'},  # a quote inside a value
    {"a": '" b=1'},
    {'a"': "1"},
    {"a b": "1"},  # not a parameter name
    {"a=b": "1"},
    {"": "1"},
    {"--": None},  # the kernel ignores every parameter after "--"
    {"-x": "1"},
    {"a": {"nested": 1}},
    {"a": [[1]]},
    {"a": ["1,2"]},  # an array item the kernel would split
    {"a": [None]},
    {1: "x"},
    'a="unbalanced b=1',  # the open quote swallows every later option
    'a=x"y"',
    "a='b c'",  # single quotes mean nothing to the kernel: "c'" is no parameter
    "--",
    "a=\u00e0",  # UTF-8 c3 a0: the kernel splits at the 0xA0 byte
    "a b=\ud800",
] + [{"a": f"x{ch}y"} for ch in LINE_BREAKERS] + [{f"a{ch}": "1"} for ch in LINE_BREAKERS] \
  + [f"a=x{ch}y" for ch in LINE_BREAKERS if ch != "\t"] + [{"a": [f"x{ch}y"]} for ch in LINE_BREAKERS]


@pytest.mark.parametrize("params", INJECTIONS, ids=[repr(p)[:40] for p in INJECTIONS])
def test_hostile_params_are_refused(params):
    with pytest.raises(KmodError) as err:
        format_params(params)
    assert "params" in err.value.msg


@pytest.mark.parametrize("params, expected", [
    ({"a": 1, "b": True, "c": False, "d": None, "e": [1, "x", True], "f": 1.5, "g": ""},
     [("a", "1"), ("b", "1"), ("c", "0"), ("d", None), ("e", "1,x,1"), ("f", "1.5"), ("g", "")]),
    ({"msg": "two words", "path": "C:\\dir\\x", "hash": "#not a comment", "u": "\u00e0 la"},
     [("msg", "two words"), ("path", "C:\\dir\\x"), ("hash", "#not a comment"), ("u", "\u00e0 la")]),
    ({"nbsp": "a\u00a0b", "emoji": "\U0001f600", "dollar": "$(id)"},
     [("nbsp", "a\u00a0b"), ("emoji", "\U0001f600"), ("dollar", "$(id)")]),
])
def test_dict_params_reach_the_kernel_as_asked(params, expected):
    assert kernel_view(format_params(params)) == expected


# --- 1. round trip through kmod: engine writes, modprobe reads, kernel splits ----------------

def _modprobe_options(tree, confdir: Path, module: str = "dummy") -> str:
    """The option string modprobe passes to the kernel when loading module."""
    out = subprocess.run(["modprobe", "-d", str(tree.root), "-S", tree.release, "-C", str(confdir),
                          "--show-depends", module], capture_output=True, check=True).stdout
    last = out.decode("utf-8", "surrogateescape").splitlines()[-1]
    assert last.startswith("insmod ")
    return last.split(" ", 2)[2]


@pytest.fixture(scope="module")
def oracle_tree():
    from kernels import pristine_root
    return pristine_root("6.1")


PARAM_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=12),
    st.text(alphabet=st.sampled_from(list(' a"=\\#,\'$;`\u00e0\u00a0') + [c for c in LINE_BREAKERS if len(c) == 1]), max_size=8),
    st.lists(st.text(alphabet="ab ,\\\n\u00e0", max_size=4), max_size=3))
PARAM_KEYS = st.one_of(st.from_regex(r"[a-z_][a-z0-9_.-]{0,6}", fullmatch=True),
                       st.text(alphabet="ab =\"-\n\u2028", min_size=0, max_size=4))


@HYPOTHESIS
@given(params=st.one_of(st.dictionaries(PARAM_KEYS, PARAM_VALUES, max_size=3),
                        st.text(alphabet=st.sampled_from(list('ab= "\\\n\r\u00e0\u2028-.')), max_size=16)))
def test_params_refused_or_round_trip_through_modprobe(tmp_path_factory, oracle_tree, params):
    """Whatever the value: a clear refusal, or the kernel gets from the file exactly what
    it gets at runtime, which for a dict is exactly what was asked."""
    try:
        options = format_params(params)
    except KmodError as err:
        assert "params" in err.msg
        return
    runtime = kernel_view(options)
    if isinstance(params, dict):
        assert runtime == [(name, expected_value(value)) for name, value in params.items()]
    confdir = tmp_path_factory.mktemp("conf")
    text = edit_options(None, "dummy", options.strip(" ") or None)
    if text is None:
        assert not runtime
        return
    (confdir / "dummy.conf").write_bytes(text.encode("utf-8", "surrogateescape"))
    assert len(text.splitlines()) == 1 and text.startswith("options dummy ")
    assert kernel_view(_modprobe_options(oracle_tree, confdir)) == runtime


def expected_value(value) -> str | None:
    """What a dict value means to a module parameter (bool 1/0, lists are arrays)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list):
        return ",".join(expected_value(item) for item in value)  # type: ignore[misc]
    return str(value)


@pytest.fixture
def system(scratch_kernel):
    tree = scratch_kernel("6.1")
    kernel = FakeKernel(tree.root, tree.release)

    def run(names, **kwargs):
        planner = Planner(KmodPaths(str(tree.root), tree.release))
        plan = planner.plan(names, **kwargs)
        execute(plan, kernel, lambda c, e: (0, "", ""))
        return plan

    run.tree, run.kernel = tree, kernel
    return run


@pytest.mark.parametrize("params", [
    {"numdummies": 2, "note": "a b\\c #d", "list": ["x", 1]},
    'numdummies=3 "note=a b" x=\\\\',
])
def test_persistent_round_trip_absent_and_reruns(system, params):
    """The options the engine writes are what modprobe passes, the same as the runtime
    load; a rerun adds no copy; persistent=absent takes our lines back out."""
    tree = system.tree
    etc = tree.root / "etc"
    (etc / "modprobe.d").mkdir(parents=True)
    theirs = "# theirs\nalias my-dummy dummy\n"
    (etc / "modprobe.d" / "dummy.conf").write_text(theirs)
    options = format_params(params)
    system(["dummy"], params=options, persistent="present")
    runtime = system.kernel.calls[-1][2]
    assert kernel_view(_modprobe_options(tree, etc / "modprobe.d")) == kernel_view(runtime) == kernel_view(options)
    first = {p: p.read_bytes() for p in (etc / "modprobe.d/dummy.conf", etc / "modules-load.d/dummy.conf")}
    plan = system(["dummy"], params=options, persistent="present")
    assert not plan.changed and {p: p.read_bytes() for p in first} == first
    system(["dummy"], state="absent", persistent="absent")
    assert (etc / "modprobe.d/dummy.conf").read_text() == theirs
    assert not (etc / "modules-load.d/dummy.conf").exists()


def test_persistent_refuses_hostile_params_and_writes_nothing(system):
    with pytest.raises(KmodError, match="params"):
        system(["dummy"], params="numdummies=2\ninstall dummy touch /tmp/x #", persistent="present")
    assert not (system.tree.root / "etc").exists() and system.kernel.calls == []


# --- 1. injection: names ----------------------------------------------------------------------

BAD_NAMES = ["dummy\ninstall dummy touch /tmp/x", "dummy\rx", "a b", "a\tb", "a#b", "a\\b", "a/b", "..",
             "a*", "a?", "[a]", "a.ko", "a:b", "\u00e9", "dummy\u2028x", "dummy\x85", "dummy\ud800",
             "dummy\x00", "", "a\u00a0b"] + [f"x{ch}" for ch in LINE_BREAKERS]


@pytest.mark.parametrize("name", BAD_NAMES, ids=[repr(n) for n in BAD_NAMES])
def test_hostile_names_are_refused_everywhere(name):
    for call in (lambda: edit_blacklist(None, [name], "present"),
                 lambda: edit_blacklist("blacklist a\n", ["a", name], "absent"),
                 lambda: edit_options(None, name, "a=1"),
                 lambda: check_module_name(name)):
        with pytest.raises(InvalidNameError) as err:
            call()
        assert repr(name) in err.value.msg


# --- 4. neighbours: modprobe -c before and after ------------------------------------------------

def modprobe_c(tmp_path: Path, text: str) -> list[str]:
    """kmod's own reading of one configuration file: every line of ``modprobe -c``."""
    (tmp_path / "lib/modules/x").mkdir(parents=True, exist_ok=True)
    conf = tmp_path / "conf"
    conf.mkdir(exist_ok=True)
    (conf / "a.conf").write_bytes(text.encode("utf-8", "surrogateescape"))
    out = subprocess.run(["modprobe", "-c", "-d", str(tmp_path), "-S", "x", "-C", str(conf)],
                         capture_output=True, check=True).stdout.decode("utf-8", "surrogateescape")
    return out.split("\n")


def not_ours(lines: list[str], key: str) -> list[str]:
    """Lines of modprobe -c about anything but module key ('alias X key' is not ours).

    kmod 30 reads a backslash at the end of a file as a 0xFF byte: 'blacklist foo\\' is
    about 'foo\\xff' to it, and about foo to kmod 31+ and to us; it counts as ours."""
    out = []
    for line in lines:
        words = line.split(" ")
        if len(words) >= 2 and words[0] in ("blacklist", "install", "remove", "softdep", "options",
                                            "weakdep") and words[1].rstrip("\udcff") == key:
            continue
        out.append(line)
    return out


def our_view(text: str) -> ModprobeConfig:
    config = ModprobeConfig()
    config.parse(text, "a.conf")
    return config


NEIGHBOURS = [
    "options loop max_loop=8 \\",
    "options loop max_loop=8 \\\n",
    "options loop max_loop=8\\\\",
    "options loop max_loop=8\\\\\\",
    "options loop max_loop=8 \\\n\\",
    "# a comment \\",
    "# a comment \\\n",
    "#\\",
    "\\",
    "\\\n",
    "blacklist floppy",
    "blacklist floppy\r",
    "blacklist floppy\r\n",
    "alias foo bar\x00 blacklist dummy",
    "install snd /bin/true \\\n  # continued",
    "blacklist dummy \\",  # ours, read differently by kmod 30 (0xFF) and 31+
    "install dummy /sbin/x \\",
    "options dummy numdummies=1 \\",
    "options dummy numdummies=1\noptions loop max_loop=8 \\",
    "blacklist dummy\nalias x y \\",
    "\u00e9\u2028blacklist dummy\x85\n",
]


OPTIONS = 'numdummies=2 x="a b\\c" y=\\'


@pytest.mark.parametrize("before", NEIGHBOURS, ids=[repr(t) for t in NEIGHBOURS])
@pytest.mark.parametrize("edit", ["blacklist", "disable", "remove", "options", "no-options"])
def test_edits_leave_neighbours_alone(tmp_path, before, edit):
    if edit in ("blacklist", "disable"):
        after = edit_blacklist(before, ["dummy"], "present", edit)
    elif edit == "remove":
        after = edit_blacklist(before, ["dummy"], "absent")
    else:
        after = edit_options(before, "dummy", OPTIONS if edit == "options" else None) or ""
    kmod_before, kmod_after = modprobe_c(tmp_path / "b", before), modprobe_c(tmp_path / "a", after)
    assert not_ours(kmod_after, "dummy") == not_ours(kmod_before, "dummy")
    assert directives(our_view(after), "dummy") == directives(our_view(before), "dummy")
    dummy = [line for line in kmod_after if line.split(" ")[1:2] == ["dummy"]]
    if edit == "blacklist":
        assert "blacklist dummy" in dummy and not any(line.startswith("install dummy /bin/false") for line in dummy)
    elif edit == "disable":
        installs = [line for line in dummy if line.startswith("install ")]
        assert "blacklist dummy" in dummy and installs[0] == "install dummy /bin/false"
    elif edit == "remove":
        assert "blacklist dummy" not in dummy
    elif edit == "options":
        # modprobe passes on the options exactly as given (the file holds them escaped)
        assert [line for line in dummy if line.startswith("options ")] == [f"options dummy {OPTIONS}"]
    else:
        assert not [line for line in dummy if line.startswith("options ")]


def directives(config: ModprobeConfig, key: str) -> list[tuple]:
    """Our parser's directives about anything but module key, without line numbers (they
    move when new lines go before a final line that ends in a backslash)."""
    out = []
    for kind in ("aliases", "options", "install", "remove", "blacklist", "softdeps", "weakdeps"):
        for entry in getattr(config, kind):
            if getattr(entry, "pattern", None) is None and entry.modname == key:
                continue
            fields = {k: v for k, v in vars(entry).items() if k != "source"}
            out.append((kind, tuple(sorted(fields.items()))))
    return out


# --- fuzzing: the parser against kmod, the editor against kmod -----------------------------------

TOKENS = ["blacklist", "install", "options", "softdep", "alias", "remove", " ", " ", "\t", "\n", "\n", "\\",
          "#", "dummy", "dum-my", "loop", "x", "/bin/false", "/bin/true", "pre:", "post:", "\r", "\x00", "=1",
          "\u00e9", "\udcff"]
TEXTS = st.lists(st.sampled_from(TOKENS), max_size=30).map("".join)


@HYPOTHESIS
@given(text=TEXTS)
def test_fuzz_parser_agrees_with_modprobe(tmp_path_factory, text):
    if text.endswith("\\") and (len(text) - len(text.rstrip("\\"))) % 2:
        text += "\n"  # kmod 30 reads a final lone backslash as 0xFF, a bug we do not copy
    tmp = tmp_path_factory.mktemp("p")
    baseline = modprobe_c(tmp / "empty", "")  # options from the host's kernel command line
    kmod = [line for line in modprobe_c(tmp / "text", text)
            if line.startswith(("blacklist ", "options ", "install ", "remove ", "alias "))]
    for line in baseline:
        if line.startswith("options ") and line in kmod:
            kmod.remove(line)
    config = our_view(text)
    ours = ([f"blacklist {e.modname}" for e in config.blacklist]
            + [f"options {e.modname} {e.options}" for e in config.options]
            + [f"install {e.modname} {e.command}" for e in config.install]
            + [f"remove {e.modname} {e.command}" for e in config.remove]
            + [f"alias {e.pattern} {e.modname}" for e in config.aliases])
    assert sorted(ours) == sorted(kmod)


NAMES = st.lists(st.sampled_from(["dummy", "dum-my", "loop", "x", "snd_pcm"]), min_size=1, max_size=3)


@HYPOTHESIS
@given(text=TEXTS, names=NAMES, state=st.sampled_from(["present", "absent"]),
       mode=st.sampled_from(["blacklist", "disable"]))
def test_fuzz_editor_keeps_neighbours(tmp_path_factory, text, names, state, mode):
    after = edit_blacklist(text, names, state, mode)
    assert edit_blacklist(after, names, state, mode) == after  # idempotent
    tmp = tmp_path_factory.mktemp("e")
    kmod_before, kmod_after = modprobe_c(tmp / "b", text), modprobe_c(tmp / "a", after)
    keys = {n.replace("-", "_") for n in names}
    before_lines, after_lines = kmod_before, kmod_after
    for key in keys:
        before_lines, after_lines = not_ours(before_lines, key), not_ours(after_lines, key)
    assert after_lines == before_lines
    for key in keys:
        mine = [line for line in kmod_after if line.split(" ")[1:2] == [key]]
        stopping = [line for line in mine if line.startswith("install ")
                    and line.split(" ")[2].rsplit("/", 1)[-1] in ("false", "true")]
        if state == "present":
            assert f"blacklist {key}" in mine
            if mode == "disable":
                first_install = next(line for line in mine if line.startswith("install "))
                assert first_install == f"install {key} /bin/false"
        else:
            assert f"blacklist {key}" not in mine and not stopping


@HYPOTHESIS
@given(text=TEXTS, options=st.sampled_from([None, "a=1", 'b="x y" c=\\\\']))
def test_fuzz_options_editor_keeps_neighbours(tmp_path_factory, text, options):
    after = edit_options(text, "dummy", options)
    tmp = tmp_path_factory.mktemp("o")
    kmod_before = modprobe_c(tmp / "b", text)
    kmod_after = modprobe_c(tmp / "a", after or "")
    if after is None:
        assert not [line for line in not_ours(kmod_before, "dummy") if line.startswith(
            ("blacklist ", "options ", "install ", "alias ", "remove ", "softdep "))
            and line not in kmod_after]
        return
    assert not_ours(kmod_after, "dummy") == not_ours(kmod_before, "dummy")
    mine = [line for line in kmod_after if line.startswith("options dummy ")]
    assert mine == ([f"options dummy {options}"] if options else [])


# --- modules-load.d (systemd-modules-load: lines end at \n, \r or NUL; blanks are stripped;
# empty lines and lines starting with '#' or ';' are ignored: modules-load.d(5)) -------------

@pytest.mark.parametrize("before, present, after", [
    (None, True, MANAGED_HEADER + "dummy\n"),
    ("loop", True, "loop\ndummy\n"),  # a last line without newline is ended first
    ("loop\r", True, "loop\r\ndummy\n"),
    ("  dummy \t\n", True, "  dummy \t\n"),  # already there
    ("# dummy\n;dummy\n", True, "# dummy\n;dummy\ndummy\n"),  # comments are not entries
    ("dummy.ko\n", True, "dummy.ko\ndummy\n"),  # another name to systemd
    ("loop\rdummy\n", True, "loop\rdummy\n"),  # systemd reads dummy from it: nothing to add
    ("loop\rdummy\n", False, "loop\rdummy\n"),  # but the line also loads loop: not ours to remove
    ("dummy\u2028x\n", False, "dummy\u2028x\n"),  # one (bogus) name to systemd, not dummy
    ("loop\ndummy\n  dummy\n", False, "loop\n"),
    ("# mine\ndummy\n", False, None),  # nothing but comments left: the file goes
])
def test_modules_load_edits(before, present, after):
    assert edit_modules_load(before, "dummy", present, MANAGED_HEADER) == after


@pytest.mark.parametrize("persistent", [None, "present"])
@pytest.mark.parametrize("value", ["$(touch /tmp/x)", "`touch /tmp/x`", "1;touch /tmp/x", "1|x", "1&&x", "a'b"])
def test_options_never_reach_a_shell_as_syntax(system, value, persistent):
    """An install command with $CMDLINE_OPTS gets our options through /bin/sh (modprobe
    substitutes them, its own options included), now and at boot: shell syntax is refused."""
    conf = system.tree.root / "etc/modprobe.d"
    conf.mkdir(parents=True)
    (conf / "00-install.conf").write_text("install dummy /sbin/modprobe --ignore-install dummy $CMDLINE_OPTS\n")
    with pytest.raises(KmodError, match=r"params.*\$CMDLINE_OPTS"):
        system(["dummy"], params=format_params({"numdummies": value}), persistent=persistent)
    assert sorted(p.name for p in conf.iterdir()) == ["00-install.conf"] and system.kernel.calls == []


@HYPOTHESIS
@given(text=TEXTS.filter(lambda text: "\\" not in text and "\x00" not in text))
def test_fuzz_fast_scan_equals_line_by_line(text):
    """Texts without backslashes are scanned by one regex for entry lines: the editor sees
    the same entries as the line-by-line reader, and every byte is kept."""
    fast, slow = _parse_for_edit(text), parse_lines(text)
    assert "".join(line.raw for line in fast) == text
    fields = ("raw", "kind", "key", "rest", "stops_loading", "no_softdeps", "is_entry", "is_disable", "words")
    assert [[getattr(line, f) for f in fields] for line in fast if line.kind] == \
        [[getattr(line, f) for f in fields] for line in slow if line.kind]
    assert any(line.words for line in fast) == any(line.words for line in slow)
