# SPDX-License-Identifier: GPL-3.0-or-later
"""config_edit: edit tables, and what kmod's own parser (``modprobe -c``) sees in the results."""

from __future__ import annotations

import subprocess

import pytest

from ansible_collections.kernel.kmod.plugins.module_utils._kmod.config_edit import (
    NEW_FILE_HEADER, ModprobeConfEditor, check_module_name, edit_blacklist, parse_lines)
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.errors import InvalidNameError, KmodError

H = NEW_FILE_HEADER

# (id, before (None: no file), names, state, mode, exclusive, expected after)
CASES = [
    ("new-file-blacklist", None, ["dummy"], "present", "blacklist", False,
     H + "blacklist dummy\n"),
    ("new-file-disable", None, ["i2c-dev"], "present", "disable", False,
     H + "blacklist i2c-dev\ninstall i2c-dev /bin/false\nsoftdep i2c-dev pre:\n"),
    ("absent-no-file-stays-empty", None, ["dummy"], "absent", "blacklist", False, ""),
    ("existing-empty-file-gets-no-header", "", ["dummy"], "present", "blacklist", False,
     "blacklist dummy\n"),
    ("append-after-missing-newline", "# mine\noptions x y", ["dummy"], "present", "blacklist", False,
     "# mine\noptions x y\nblacklist dummy\n"),
    ("dash-underscore-equivalent", "blacklist i2c_dev\n", ["i2c-dev"], "present", "blacklist", False,
     "blacklist i2c_dev\n"),
    ("tabs-and-trailing-words", "  blacklist\tfoo  # why\n", ["foo"], "present", "blacklist", False,
     "  blacklist\tfoo  # why\n"),
    ("continuation-line-counts", "black\\\nlist \\\nfoo\n", ["foo"], "present", "blacklist", False,
     "black\\\nlist \\\nfoo\n"),
    ("backslash-escape-counts", "blackl\\ist foo\n", ["foo"], "present", "blacklist", False,
     "blackl\\ist foo\n"),
    ("continued-comment-hides-entry", "# old \\\nblacklist foo\n", ["foo"], "present", "blacklist",
     False, "# old \\\nblacklist foo\nblacklist foo\n"),
    ("indented-comment-is-no-entry", "  # x\n", ["foo"], "present", "blacklist", False,
     "  # x\nblacklist foo\n"),
    ("crlf-name-is-another-name", "blacklist foo\r\n", ["foo"], "present", "blacklist", False,
     "blacklist foo\r\nblacklist foo\n"),
    ("disable-adds-install-after-blacklist", "# a\nblacklist foo\n# b\nalias x bar\n", ["foo"],
     "present", "disable", False,
     "# a\nblacklist foo\ninstall foo /bin/false\nsoftdep foo pre:\n# b\nalias x bar\n"),
    ("disable-keeps-existing-lines", "install foo   /usr/bin/false # off\nblacklist foo\nsoftdep foo x post:\n",
     ["foo"], "present", "disable", False,
     "install foo   /usr/bin/false # off\nblacklist foo\nsoftdep foo x post:\n"),
    ("disable-replaces-true-custom-and-softdeps",
     "install foo /bin/true\nsoftdep foo pre: bar\nblacklist foo\ninstall foo /sbin/x\n", ["foo"], "present",
     "disable", False, "blacklist foo\ninstall foo /bin/false\nsoftdep foo pre:\n"),
    ("blacklist-mode-drops-disable",
     "blacklist foo\ninstall foo /bin/false\ninstall foo /bin/true\nsoftdep foo pre: post:\n",
     ["foo"], "present", "blacklist", False, "blacklist foo\n"),
    ("blacklist-mode-keeps-real-softdep", "softdep foo pre: bar\n", ["foo"], "present", "blacklist", False,
     "softdep foo pre: bar\nblacklist foo\n"),
    ("blacklist-mode-keeps-custom-install", "install foo /sbin/x $CMDLINE_OPTS\n", ["foo"], "present",
     "blacklist", False, "install foo /sbin/x $CMDLINE_OPTS\nblacklist foo\n"),
    ("remove-all-spellings", "# keep\nblacklist foo-bar\nblacklist\tfoo_bar\ninstall foo-bar /bin/false\n"
     "options foo_bar a=1\n", ["foo_bar"], "absent", "blacklist", False, "# keep\noptions foo_bar a=1\n"),
    ("remove-continued-entry-whole", "a\\\nlias x y\nblack\\\nlist foo\nalias z w\n", ["foo"], "absent",
     "disable", False, "a\\\nlias x y\nalias z w\n"),
    ("remove-keeps-custom-install", "install foo /sbin/x\nblacklist foo\n", ["foo"], "absent", "disable",
     False, "install foo /sbin/x\n"),
    ("remove-leaves-comment-hidden-entry", "# \\\nblacklist foo\n", ["foo"], "absent", "blacklist", False,
     "# \\\nblacklist foo\n"),
    ("install-without-command-is-no-entry", "install foo \n", ["foo"], "absent", "blacklist", False,
     "install foo \n"),
    ("exclusive-removes-others", "# head\nblacklist a\nblacklist b\ninstall b /bin/false\n"
     "install c /bin/true\ninstall d /sbin/d\noptions b x=1\n", ["a", "e"], "present", "blacklist", True,
     "# head\nblacklist a\ninstall d /sbin/d\noptions b x=1\nblacklist e\n"),
    ("exclusive-same-spelling-kept", "blacklist a-b\nsoftdep b pre:\nsoftdep c pre: d\n", ["a_b"], "present",
     "disable", True, "blacklist a-b\ninstall a_b /bin/false\nsoftdep a_b pre:\nsoftdep c pre: d\n"),
    ("bad-bracket-name-line-is-no-entry", "blacklist x]\n", ["foo"], "present", "blacklist", True,
     "blacklist x]\nblacklist foo\n"),
    ("several-names-keep-order", "blacklist b\n", ["a", "b", "c"], "present", "blacklist", False,
     "blacklist b\nblacklist a\nblacklist c\n"),
]


@pytest.mark.parametrize("before,names,state,mode,exclusive,after",
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_edit(before, names, state, mode, exclusive, after):
    assert edit_blacklist(before, names, state, mode, exclusive) == after
    # Idempotent: a second run on the result changes nothing.
    assert edit_blacklist(after, names, state, mode, exclusive) == after


@pytest.mark.parametrize("name", ["", " ", "a b", "a\nb", "a\tb", "a/b", "../x", "snd*", "a?", "[ab]",
                                  "a]", "a\\b", "#a", "a\x00", 42, None])
def test_bad_names_rejected_before_editing(name):
    with pytest.raises(InvalidNameError) as err:
        edit_blacklist("blacklist good\n", ["good", name], "absent")
    assert repr(name) in err.value.msg


@pytest.mark.parametrize("name", ["dummy", "i2c-dev", "snd_hda_intel", "8139too", "-x"])
def test_good_names(name):
    assert check_module_name(name) == name


def test_exclusive_needs_present():
    with pytest.raises(KmodError, match="exclusive"):
        edit_blacklist("blacklist a\n", ["a"], "absent", exclusive=True)


def test_untouched_lines_are_byte_identical():
    text = "# é \\\n ünïcode\n\n\t\nalias  a  b\r\noptions x  y=1 \\\n z=2\nblacklist old"
    editor = ModprobeConfEditor(text)
    assert editor.text() == text
    editor.ensure("new", "disable")
    assert editor.text() == text + "\nblacklist new\ninstall new /bin/false\nsoftdep new pre:\n"


# Parser oracle: what kmod itself takes as blacklist/install entries of a file.
PARSE_TEXTS = [
    "# c \\\nblacklist foo\nblack\\list bar\n  blacklist\tbaz qux\ninstall a  /bin/false\n",
    "install b \ninstall c\t\t/bin/true # x\nblacklist i2c-dev\nblacklist x]\nblacklist q\r\n",
    "blacklist\nblacklist a[b]-c\ninstall d-e /sbin/modprobe --ignore-install d $CMDLINE_OPTS\n",
    "  # indented\n#blacklist no\nblacklist \\\n  cont\ninstall f \\\n/bin/false\\\n",
    "softdep a pre:\nsoftdep b x post:\nsoftdep c pre: d\nsoftdep\te  post:\t\nsoftdep f\nsoftdep g \n",
]


def _kmod_entries(tmp_path, text: str) -> list[str]:
    """blacklist/install lines of ``modprobe -c`` for one config file (kmod is the oracle)."""
    (tmp_path / "lib/modules/x").mkdir(parents=True, exist_ok=True)
    confdir = tmp_path / "modprobe.d"
    confdir.mkdir(exist_ok=True)
    (confdir / "a.conf").write_bytes(text.encode("utf-8", "surrogateescape"))
    out = subprocess.run(["modprobe", "-c", "-d", str(tmp_path), "-S", "x", "-C", str(confdir)],
                         capture_output=True, check=True).stdout.decode("utf-8", "surrogateescape")
    # Softdeps: only those naming no module ("softdep KEY "), the ones the editor manages.
    return [line for line in out.split("\n") if line.startswith(("blacklist ", "install "))
            or (line.startswith("softdep ") and line.count(" ") == 2 and line.endswith(" "))]


def _our_entries(text: str) -> list[str]:
    lines = [line for line in parse_lines(text) if line.key is not None]
    # modprobe -c lists every blacklist, then every install, then every softdep.
    return ([f"blacklist {line.key}" for line in lines if line.kind == "blacklist"]
            + [f"install {line.key} {line.rest}" for line in lines if line.kind == "install"]
            + [f"softdep {line.key} " for line in lines if line.no_softdeps])


@pytest.mark.parametrize("text", PARSE_TEXTS)
def test_parser_agrees_with_modprobe(tmp_path, text):
    assert _our_entries(text) == _kmod_entries(tmp_path, text)


@pytest.mark.parametrize("before,names,state,mode,exclusive,after",
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_kmod_sees_the_edit(tmp_path, before, names, state, mode, exclusive, after):
    """After an edit, kmod's parser reports each name blacklisted (and disabled) or not at all."""
    entries = _kmod_entries(tmp_path, edit_blacklist(before, names, state, mode, exclusive))
    for name in names:
        key = name.replace("-", "_")
        blacklisted = f"blacklist {key}" in entries
        disabled = any(e.startswith(f"install {key} ") and e.split()[2].endswith("/false")
                       for e in entries)
        no_softdeps = f"softdep {key} " in entries
        if state == "present":
            assert blacklisted
            assert disabled == no_softdeps == (mode == "disable")
        else:
            assert not blacklisted and not disabled and not no_softdeps
