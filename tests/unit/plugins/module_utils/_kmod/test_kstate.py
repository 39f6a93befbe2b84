# SPDX-License-Identifier: GPL-3.0-or-later
"""KernelState against fake /proc and /sys trees in the kernel's own formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from ansible_collections.kernel.kmod.plugins.module_utils._kmod.errors import KernelStateError
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.kstate import (
    KernelState,
    LoadedModule,
    decode_taint,
    parse_proc_modules,
)
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.paths import KmodPaths

# Lines as kernel/module/procfs.c m_show() prints them: holders end in ',' (or '-'),
# '[permanent],' marks a module without exit, '(taint[+-])' follows when tainted or
# in transition; addresses read as zero without CAP_SYSLOG.
PROC_MODULES = """\
nf_nat 61440 3 xt_MASQUERADE,nft_chain_nat,xt_nat, Live 0xffffffffc0a4b000
nft_chain_nat 16384 3 - Live 0x0000000000000000
vboxdrv 700416 2 vboxnetadp,vboxnetflt, Live 0xffffffffc0b3c000 (OE)
dummy 16384 0 - Loading 0xffffffffc0c00000 (+)
i2c_dev 28672 0 - Unloading 0xffffffffc0c10000 (OE-)
ipv6 589824 30 [permanent], Live 0xffffffffc0d00000
"""

# A kernel without CONFIG_MODULE_UNLOAD prints " - -" for refcount and holders.
PROC_MODULES_NO_UNLOAD = "loop 40960 - - Live 0x0000000000000000\n"


def make_root(base: Path, files: dict[str, str]) -> KmodPaths:
    for rel, content in files.items():
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if content.endswith("/"):
            path.mkdir(exist_ok=True)
        else:
            path.write_text(content)
    return KmodPaths(str(base), "6.1.0-test")


@pytest.fixture
def state(tmp_path: Path) -> KernelState:
    paths = make_root(tmp_path, {
        "proc/modules": PROC_MODULES,
        "proc/cmdline": "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet\n",
        "proc/sys/kernel/tainted": "12289\n",  # P + O + E
        "sys/module/compression": "xz\n",
        "sys/module/module/parameters/sig_enforce": "N\n",
        "sys/module/nf_nat/initstate": "live\n",
        "sys/module/nf_nat/refcnt": "3\n",
        "sys/module/nf_nat/coresize": "61440\n",
        "sys/module/nf_nat/holders/xt_nat/": "/",
        "sys/module/nf_nat/holders/nft_chain_nat/": "/",
        "sys/module/nf_nat/holders/xt_MASQUERADE/": "/",
        "sys/module/dummy/initstate": "coming\n",
        "sys/module/dummy/parameters/numdummies": "1\n",
        "sys/module/i2c_dev/initstate": "going\n",
        "sys/module/vboxdrv/": "/",
        "sys/module/kvm/initstate": "bogus\n",
        "sys/module/8250/parameters/nr_uarts": "4\n",
        "sys/module/8250/parameters/share_irqs": "0\n",
        "sys/module/bridge/version": "2.3\n",
    })
    return KernelState(paths)


def test_parse_proc_modules_fields() -> None:
    mods = parse_proc_modules(PROC_MODULES)
    assert list(mods) == ["nf_nat", "nft_chain_nat", "vboxdrv", "dummy", "i2c_dev", "ipv6"]
    assert mods["nf_nat"] == LoadedModule(
        name="nf_nat", size=61440, refcount=3, holders=("xt_MASQUERADE", "nft_chain_nat", "xt_nat"),
        permanent=False, state="Live", address="0xffffffffc0a4b000", taint="")
    assert mods["nft_chain_nat"].holders == ()
    assert mods["nft_chain_nat"].address is None
    assert mods["vboxdrv"].taint == "OE"
    assert (mods["dummy"].state, mods["dummy"].taint) == ("Loading", "")
    assert (mods["i2c_dev"].state, mods["i2c_dev"].taint) == ("Unloading", "OE")
    assert mods["ipv6"].permanent and mods["ipv6"].holders == ()


def test_parse_proc_modules_without_unload_support() -> None:
    loop = parse_proc_modules(PROC_MODULES_NO_UNLOAD)["loop"]
    assert loop.refcount is None and loop.holders == ()


@pytest.mark.parametrize("line", [
    "nf_nat 61440",
    "nf_nat big 3 - Live 0x0",
    "nf_nat 61440 3 - Sleeping 0x0",
    "nf_nat 61440 3 - Live nothex",
])
def test_parse_proc_modules_rejects_malformed(line: str) -> None:
    with pytest.raises(KernelStateError, match=r"line 2 in /proc/modules"):
        parse_proc_modules("dummy 16384 0 - Live 0x0\n" + line + "\n")


def test_loaded_and_supported(state: KernelState) -> None:
    assert state.supported
    assert set(state.loaded()) == {"nf_nat", "nft_chain_nat", "vboxdrv", "dummy", "i2c_dev", "ipv6"}


def test_no_module_support(tmp_path: Path) -> None:
    empty = KernelState(KmodPaths(str(tmp_path), "6.1.0-test"))
    assert not empty.supported
    assert empty.loaded() == {}
    assert empty.tainted() is None and empty.sig_enforce() is None
    assert empty.compression() is None and empty.kernel_cmdline() is None
    assert empty.sysfs_modules() == [] and empty.initstate("dummy") is None


@pytest.mark.parametrize("name, builtin, expected", [
    ("nf_nat", False, "live"),
    ("dummy", False, "coming"),
    ("i2c-dev", False, "going"),  # names are normalised like kmod does
    ("vboxdrv", False, "coming"),  # dir without initstate: kmod says COMING
    ("8250", False, "coming"),
    ("absent", False, None),
    ("absent", True, "builtin"),
])
def test_initstate(state: KernelState, name: str, builtin: bool, expected: str | None) -> None:
    assert state.initstate(name, builtin=builtin) == expected


def test_initstate_rejects_unknown_content(state: KernelState) -> None:
    with pytest.raises(KernelStateError, match="Unknown module state 'bogus'.*kvm/initstate"):
        state.initstate("kvm")


def test_sysfs_attributes(state: KernelState) -> None:
    assert state.refcnt("nf_nat") == 3 and state.refcnt("absent") is None
    assert state.coresize("nf_nat") == 61440
    assert state.holders("nf_nat") == ["nft_chain_nat", "xt_MASQUERADE", "xt_nat"]
    assert state.holders("absent") == []
    assert state.parameters("8250") == {"nr_uarts": "4", "share_irqs": "0"}
    assert state.parameters("absent") == {}


def test_parameters_skip_unreadable(state: KernelState) -> None:
    # Tests run as root, who reads mode-000 files; a directory fails open() for anyone.
    Path(state.paths.sys("module", "8250", "parameters", "secret")).mkdir()
    assert state.parameters("8250") == {"nr_uarts": "4", "share_irqs": "0"}


def test_builtin_from_sysfs(state: KernelState) -> None:
    assert "module" in state.sysfs_modules()
    assert state.sysfs_builtin() == ["8250", "bridge", "module", "vboxdrv"]


def test_kernel_wide_values(state: KernelState) -> None:
    assert state.compression() == "xz"
    assert state.kernel_cmdline() == "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet"
    assert state.sig_enforce() is False
    taint = state.tainted()
    assert taint is not None and taint.value == 12289 and taint.text == "POE"
    assert [f.bit for f in taint.flags] == [0, 12, 13]


@pytest.mark.parametrize("value, letters", [
    (0, ""),
    (1, "P"),
    (1 << 9 | 1 << 13, "WE"),
    (1 << 17, "T"),
    (1 << 30, "?"),
])
def test_decode_taint(value: int, letters: str) -> None:
    assert decode_taint(value).text == letters


def test_bad_integer_names_file(tmp_path: Path) -> None:
    paths = make_root(tmp_path, {"proc/sys/kernel/tainted": "lots\n"})
    with pytest.raises(KernelStateError, match="tainted"):
        KernelState(paths).tainted()
