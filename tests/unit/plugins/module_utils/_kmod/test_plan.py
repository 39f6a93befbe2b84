# SPDX-License-Identifier: GPL-3.0-or-later
"""Planner + execute on real module trees with a FakeKernel; resolution checked against modprobe."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from fake_kernel import FakeKernel, kernel_name
from kernels import scratch_root

from ansible_collections.kernel.kmod.plugins.module_utils._kmod.errors import (
    InvalidNameError, KmodError, LoaderError, ModuleLookupError)
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.loader import Loader
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.paths import KmodPaths
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.execute import execute
from ansible_collections.kernel.kmod.plugins.module_utils._kmod.plan import (
    Insert, Planner, Remove, RunCommand, WriteFile, format_params)

NF_NAT_CHAIN = ["crc32c_intel", "crc32c_generic", "libcrc32c", "nf_defrag_ipv4", "nf_defrag_ipv6",
                "nf_conntrack", "nf_nat"]


class System:
    """A scratch root with a FakeKernel: plan, run, and ask modprobe about the same tree."""

    def __init__(self, root: Path, release: str, compression: str | None = None) -> None:
        self.root, self.release = root, release
        self.kernel = FakeKernel(root, release, compression)
        self.commands: list[tuple[str, dict[str, str]]] = []
        self.command_rc = 0

    @property
    def paths(self) -> KmodPaths:
        return KmodPaths(str(self.root), self.release)

    def planner(self) -> Planner:
        return Planner(self.paths)

    def plan(self, names, **kwargs):
        return self.planner().plan(names, **kwargs)

    def run(self, command: str, env: dict[str, str]) -> tuple[int, str, str]:
        self.commands.append((command, env))
        return self.command_rc, "", "boom" if self.command_rc else ""

    def apply(self, names, **kwargs):
        planner = self.planner()
        plan = planner.plan(names, **kwargs)
        execute(plan, self.kernel, self.run)
        return plan

    def conf(self, text: str, name: str = "test.conf") -> None:
        d = self.root / "etc/modprobe.d"
        d.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(text)

    def modprobe(self, *args: str) -> list[str]:
        """kmod's own answer for this root, configuration only from the root's modprobe.d."""
        conf = self.root / "etc/modprobe.d"
        cmd = ["modprobe", "-d", str(self.root), "-S", self.release,
               "-C", str(conf) if conf.is_dir() else "/dev/null", "--show-depends", *args]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        return out.splitlines()


@pytest.fixture
def sys61(scratch_kernel) -> System:
    tree = scratch_kernel("6.1")
    return System(tree.root, tree.release)


def modnames(lines: list[str]) -> list[str]:
    return [os.path.basename(line.split()[1]).split(".")[0].replace("-", "_")
            for line in lines if line.startswith("insmod ")]


# --- present -----------------------------------------------------------------------------

def test_load_with_dependencies_in_modprobe_order(sys61):
    plan = sys61.apply(["nf_nat"])
    result = plan.results[0]
    expected = sys61.modprobe("nf_nat")
    assert result.show_depends == expected
    assert result.inserted == modnames(expected)
    assert [c[1] for c in sys61.kernel.calls] == [line.split()[1] for line in expected]
    assert result.action == "loaded" and plan.changed
    assert sorted(sys61.kernel.loaded()) == sorted(NF_NAT_CHAIN)
    again = sys61.apply(["nf_nat"])
    assert not again.changed and again.results[0].action == "already_loaded"
    assert again.results[0].show_depends == expected


def test_shared_dependencies_load_once_in_list_order(sys61):
    plan = sys61.plan(["xt_conntrack", "nf_nat"])
    inserts = [a.module for a in plan.actions if isinstance(a, Insert)]
    assert len(inserts) == len(set(inserts))
    assert plan.results[0].inserted == modnames(sys61.modprobe("xt_conntrack"))
    assert plan.results[1].inserted == ["nf_nat"]


@pytest.mark.parametrize("query", ["devname:vfio/vfio", "symbol:nf_nat_setup_info", "nf-nat",
                                   "fs-xfs"])
def test_alias_queries_resolve_like_modprobe(sys61, query):
    result = sys61.plan([query]).results[0]
    assert result.show_depends == sys61.modprobe(query)
    assert result.inserted == modnames(result.show_depends)


def test_builtin_is_unchanged(sys61):
    result = sys61.plan(["zswap"]).results[0]
    assert result.show_depends == sys61.modprobe("zswap") == ["builtin zswap"]
    assert result.action == "builtin"
    with pytest.raises(KmodError, match="zswap is builtin"):
        sys61.plan(["zswap"], state="absent")


def test_unknown_module_names_close_matches(sys61):
    with pytest.raises(ModuleLookupError, match="nf_natt") as info:
        sys61.plan(["nf_natt"])
    assert "nf_nat" in info.value.msg.replace("nf_natt", "")


@pytest.mark.parametrize("bad", ["", "nf nat", "nf_nat\n", "a\tb", "x\x7f"])
def test_invalid_names_rejected_before_anything(sys61, bad):
    with pytest.raises(InvalidNameError):
        sys61.apply(["dummy", bad])
    assert sys61.kernel.calls == []


def test_params_and_reload(sys61):
    plan = sys61.apply(["dummy"], params="numdummies=2")
    assert plan.results[0].show_depends == sys61.modprobe("dummy", "numdummies=2")
    assert sys61.kernel.calls[-1][2] == "numdummies=2"
    same = sys61.plan(["dummy"], params="numdummies=0x2")
    assert not same.changed and same.results[0].params_mismatch == {}
    other = sys61.plan(["dummy"], params="numdummies=3")
    assert not other.changed
    assert other.results[0].params_mismatch == {"numdummies": {"requested": "3", "loaded": "2"}}
    reloaded = sys61.apply(["dummy"], params="numdummies=3", reload=True)
    assert [type(a) for a in reloaded.actions] == [Remove, Insert]
    assert (sys61.root / "sys/module/dummy/parameters/numdummies").read_text() == "3\n"
    assert not sys61.plan(["dummy"], params="numdummies=3", reload=True).changed


def loop_max_part(value: str) -> str:
    """drivers/block/loop.c (loop_init): part_shift = fls(max_part); max_part = (1 << part_shift) - 1."""
    n = int(value)
    return str((1 << n.bit_length()) - 1) if n > 0 else value


def shown(system: System, module: str, param: str) -> str:
    return (system.root / "sys/module" / module / "parameters" / param).read_text().strip()


def test_kernel_normalized_param_is_reported_and_converges(sys61):
    sys61.kernel.normalize[("loop", "max_part")] = loop_max_part
    first = sys61.apply(["loop"], params="max_part=4").results[0]
    got = shown(sys61, "loop", "max_part")
    assert got != "4"
    assert first.params_normalized == {"max_part": {"requested": "4", "loaded": got}}
    assert first.params_mismatch == {}
    inserts = len(sys61.kernel.calls)
    for _run in range(2):
        again = sys61.apply(["loop"], params="max_part=4", reload=True)
        assert not again.changed, "the kernel shows what loading max_part=4 showed: no reload"
        assert again.results[0].params_normalized == {"max_part": {"requested": "4", "loaded": got}}
        assert again.results[0].params_mismatch == {} and again.results[0].action == "already_loaded"
    assert len(sys61.kernel.calls) == inserts
    # What the kernel shows for the shown value is that value: asking for it is the fix.
    fixed = sys61.apply(["loop"], params=f"max_part={got}", reload=True)
    assert not fixed.changed and fixed.results[0].params_normalized == {}
    assert fixed.results[0].params_mismatch == {}


def test_normalized_param_other_value_still_reloads(sys61):
    sys61.kernel.normalize[("loop", "max_part")] = loop_max_part
    sys61.apply(["loop"], params="max_part=4")
    other = sys61.apply(["loop"], params="max_part=8", reload=True)
    result = other.results[0]
    assert [type(a) for a in other.actions] == [Remove, Insert]
    assert result.params_mismatch == {"max_part": {"requested": "8", "loaded": "7"}}
    got = shown(sys61, "loop", "max_part")
    assert result.params_normalized == {"max_part": {"requested": "8", "loaded": got}}
    assert not sys61.apply(["loop"], params="max_part=8", reload=True).changed
    # Reloaded by someone else with max_part=2 (shows 3): the record no longer matches.
    sys61.kernel.delete_module("loop", 0)
    sys61.kernel.load("loop", params="max_part=2")
    assert sys61.plan(["loop"], params="max_part=8", reload=True).changed


def test_normalized_param_loaded_by_others_reloads_once(sys61):
    """Loaded at boot with max_part=4 (no record of ours): one reload, then quiet."""
    sys61.kernel.normalize[("loop", "max_part")] = loop_max_part
    sys61.kernel.load("loop", params="max_part=4")
    plan = sys61.plan(["loop"], params="max_part=4")
    assert not plan.changed and list(plan.results[0].params_mismatch) == ["max_part"]
    assert sys61.apply(["loop"], params="max_part=4", reload=True).changed
    assert not sys61.apply(["loop"], params="max_part=4", reload=True).changed


@pytest.mark.parametrize("garbage", [b"", b"{", b"[1]", b'{"loop": 3}', b'{"loop": {"shown": 1}}'])
def test_params_record_garbage_is_ignored(sys61, garbage):
    sys61.kernel.normalize[("loop", "max_part")] = loop_max_part
    sys61.kernel.load("loop", params="max_part=4")
    record = sys61.root / "run/kernel.kmod/params.json"
    record.parent.mkdir(parents=True)
    record.write_bytes(garbage)
    assert sys61.apply(["loop"], params="max_part=4", reload=True).changed
    assert not sys61.apply(["loop"], params="max_part=4", reload=True).changed


def test_unreadable_params_are_not_reloaded(sys61):
    sys61.kernel.hidden_params.add("numdummies")
    sys61.apply(["dummy"], params="numdummies=2")
    plan = sys61.plan(["dummy"], params="numdummies=3", reload=True)
    assert not plan.changed
    assert plan.results[0].params_unverified == ["numdummies"] and plan.results[0].params_mismatch == {}


def test_config_options_are_merged_like_modprobe(sys61):
    sys61.conf("options dummy numdummies=4\n")
    plan = sys61.plan(["dummy"], params="foo=1")
    assert plan.results[0].show_depends == sys61.modprobe("dummy", "foo=1")
    assert plan.actions == [Insert("dummy", str(sys61.kernel.paths["dummy"]), "numdummies=4 foo=1")]


def test_params_dict_format():
    assert format_params({"a": 1, "b": True, "c": "x y", "d": [1, 2], "e": None}) == \
        'a=1 b=1 c="x y" d=1,2 e'


def test_params_need_one_name(sys61):
    with pytest.raises(KmodError, match="exactly one name"):
        sys61.plan(["dummy", "veth"], params="x=1")


def test_install_command_runs_instead_of_insert(sys61):
    sys61.conf("install dummy /bin/echo loading $CMDLINE_OPTS\n")
    plan = sys61.apply(["dummy"], params="numdummies=1")
    assert plan.results[0].show_depends == sys61.modprobe("dummy", "numdummies=1")
    assert plan.actions == [RunCommand("dummy", "/bin/echo loading $CMDLINE_OPTS", "numdummies=1")]
    assert sys61.commands == [("/bin/echo loading numdummies=1", {"MODPROBE_MODULE": "dummy"})]
    sys61.command_rc = 3
    with pytest.raises(KmodError, match="Command for module dummy failed.*boom"):
        sys61.apply(["dummy"])


def test_softdeps_load_first(sys61):
    sys61.conf("softdep dummy pre: veth post: vxlan\n")
    result = sys61.apply(["dummy"]).results[0]
    assert result.show_depends == sys61.modprobe("dummy")
    assert result.inserted == modnames(result.show_depends)
    assert "veth" in sys61.kernel.loaded() and "vxlan" in sys61.kernel.loaded()


def test_blacklisted_alias_loads_nothing(sys61):
    sys61.conf("blacklist vfio_iommu_type1\nblacklist vfio\n")
    result = sys61.plan(["devname:vfio/vfio"]).results[0]
    assert result.show_depends == sys61.modprobe("devname:vfio/vfio") == []
    assert result.action == "blacklisted" and result.inserted == []


@pytest.mark.parametrize("err, words", [(errno.EKEYREJECTED, "signature rejected"),
                                        (errno.EINVAL, "invalid parameters"),
                                        (errno.EPERM, "not permitted")])
def test_kernel_errors_name_the_module(sys61, err, words):
    sys61.kernel.fail["finit_module"] = [err]
    with pytest.raises(LoaderError, match=f"'dummy'.*{words}"):
        sys61.apply(["dummy"])


def test_insmod_of_a_file_alone(sys61, tmp_path):
    path = str(tmp_path / "dummy.ko")
    shutil.copy(sys61.kernel.paths["dummy"], path)
    plan = sys61.apply([path], params="numdummies=1")
    assert plan.results[0].show_depends == [f"insmod {path} numdummies=1"]
    assert plan.results[0].kernel_name == "dummy"
    assert sys61.kernel.calls[0][:2] == ("finit_module", path)
    assert sys61.plan([path]).results[0].action == "already_loaded"


def test_insmod_unresolved_symbols_is_a_clear_error(sys61):
    path = sys61.kernel.paths["nf_nat"]
    with pytest.raises(ModuleLookupError, match="nf_nat.ko alone: it needs symbols from") as info:
        sys61.plan([path])
    # the modules kmod's modinfo names as its direct dependencies
    depends = subprocess.run(["modinfo", "-F", "depends", path], capture_output=True, text=True,
                             check=True).stdout.strip().split(",")
    assert info.value.details["missing"] == sorted(depends)
    sys61.apply(["nf_conntrack"])
    assert sys61.apply([path]).results[0].inserted == ["nf_nat"]


def test_kernel_reports_unknown_symbol_clearly(sys61):
    sys61.kernel.fail["finit_module"] = [errno.ENOENT]
    with pytest.raises(LoaderError, match="'dummy'.*unknown symbol"):
        sys61.apply([sys61.kernel.paths["dummy"]])


def test_kernel_name_differs_from_file_name(scratch_kernel):
    tree = scratch_kernel("6.1")
    src = tree.moddir / "kernel/drivers/net/dummy.ko"
    os.makedirs(tree.moddir / "updates/dkms")
    os.rename(src, tree.moddir / "updates/dkms/dummy-current.ko")
    subprocess.run(["depmod", "-b", str(tree.root), tree.release], check=True)
    system = System(tree.root, tree.release)
    system.kernel.load("veth")  # loaded modules the tree knows do not need the file read
    loaded = system.apply(["dummy-current"]).results[0]
    assert loaded.module == "dummy_current" and loaded.kernel_name == "dummy"
    assert system.kernel.loaded() == ["dummy", "veth"]
    again = system.plan(["dummy-current"])
    assert not again.changed and again.results[0].action == "already_loaded"
    removed = system.apply(["dummy_current"], state="absent").results[0]
    assert removed.removed == ["dummy"] and system.kernel.loaded() == ["veth"]


def copied_module(scratch_kernel, key: str, module: str, copy: str) -> System:
    """A tree where extra/COPY.ko is a byte copy of MODULE's file, next to the original
    (a dkms-style rename: the kernel registers the copy as MODULE), depmod'ed by kmod."""
    tree = scratch_kernel(key)
    system = System(tree.root, tree.release)
    src = system.kernel.paths[module]
    suffix = os.path.basename(src).split(".", 1)[1]
    os.makedirs(tree.moddir / "extra")
    shutil.copy(src, tree.moddir / f"extra/{copy}.{suffix}")
    subprocess.run(["depmod", "-b", str(tree.root), tree.release], check=True)
    return System(tree.root, tree.release)


@pytest.mark.parametrize("others", [[], ["veth"]], ids=["nothing-loaded", "veth-loaded"])
def test_copy_under_another_name_is_the_loaded_module(scratch_kernel, others):
    system = copied_module(scratch_kernel, "6.1", "dummy", "e2edummy")
    copy = str(system.kernel.moddir / "extra/e2edummy.ko")
    kname = kernel_name(copy)  # kmod's modinfo -F name
    assert kname == "dummy"
    for name in others:
        system.kernel.load(name)
    first = system.apply(["e2edummy"]).results[0]
    assert first.action == "loaded" and first.module == "e2edummy" and first.kernel_name == kname
    assert first.inserted == [kname]
    assert system.kernel.loaded() == [kname] + others
    calls = len(system.kernel.calls)
    for name in ("e2edummy", "dummy"):
        again = system.apply([name])
        assert not again.changed and again.results[0].action == "already_loaded", name
        assert again.results[0].kernel_name == kname and again.diff == []
    assert len(system.kernel.calls) == calls, "no second insert (the kernel would say EEXIST)"
    check = system.plan(["e2edummy"], state="absent")
    assert check.changed and check.diff[0]["before"] == "dummy\n"
    removed = system.apply(["e2edummy"], state="absent").results[0]
    assert removed.action == "removed" and removed.removed == [kname]
    assert removed.module == "e2edummy" and removed.kernel_name == kname
    assert system.kernel.loaded() == others
    assert not system.apply(["e2edummy"], state="absent").changed


def test_copy_loaded_under_its_kernel_name_by_someone_else(scratch_kernel):
    """dummy loaded from dummy.ko: the copy is that module too, for load and removal."""
    system = copied_module(scratch_kernel, "6.1", "dummy", "e2edummy")
    system.kernel.load("dummy")
    assert not system.plan(["e2edummy"]).changed
    assert system.apply(["e2edummy"], state="absent").results[0].removed == ["dummy"]
    assert system.kernel.loaded() == []


def test_insert_the_kernel_refuses_as_existing_is_no_change(sys61):
    """EEXIST (loaded between plan and execute) means already loaded, as modprobe takes it."""
    planner = sys61.planner()
    plan = planner.plan(["dummy"], params="numdummies=1")
    assert plan.changed and plan.diff
    sys61.kernel.load("dummy")
    execute(plan, Loader(sys61.kernel), sys61.run)
    assert sys61.kernel.calls[-1][0] == "finit_module"  # tried, refused
    result = plan.results[0]
    assert not plan.changed and result.action == "already_loaded" and result.inserted == []
    assert plan.diff == []


def test_files_are_read_only_where_the_kernel_name_matters(sys61, monkeypatch):
    from ansible_collections.kernel.kmod.plugins.module_utils._kmod import plan as plan_mod
    read: list[str] = []
    real = plan_mod.read_module
    monkeypatch.setattr(plan_mod, "read_module", lambda path: read.append(path) or real(path))
    sys61.plan(["nf_nat", "veth", "dummy"])
    assert read == [], "nothing loaded: no file can be a loaded module"
    sys61.kernel.load("dummy")
    sys61.plan(["dummy"])
    sys61.plan(["dummy"], state="absent")
    assert read == [], "a loaded file name needs no read"
    sys61.plan(["veth", "nf_nat"])
    # the requested files, not their dependencies
    assert sorted(read) == sorted(str(sys61.kernel.paths[m]) for m in ("veth", "nf_nat"))


def test_compressed_modules_go_to_the_kernel_when_it_can(tmp_path):
    tree = scratch_root("6.12", tmp_path / "xz")
    system = System(tree.root, tree.release, compression="xz")
    system.apply(["dummy"])
    assert system.kernel.calls[0][0] == "finit_module" and system.kernel.calls[0][3] == 4
    plain = System(scratch_root("6.12", tmp_path / "none").root, tree.release)
    plain.apply(["dummy"])
    assert plain.kernel.calls[0][0] == "init_module"
    assert plain.kernel.loaded() == ["dummy"]


# --- absent ------------------------------------------------------------------------------

def test_remove_takes_the_unused_dependency_closure(sys61):
    sys61.apply(["nf_nat"])
    plan = sys61.apply(["nf_nat"], state="absent")
    result = plan.results[0]
    assert result.action == "removed"
    assert result.removed[0] == "nf_nat"
    assert sys61.kernel.loaded() == []
    # dependents before dependencies
    assert result.removed.index("nf_conntrack") < result.removed.index("nf_defrag_ipv4")
    assert result.removed.index("libcrc32c") < result.removed.index("crc32c_intel")
    again = sys61.plan(["nf_nat"], state="absent")
    assert not again.changed and again.results[0].action == "absent"


def test_references_the_plan_cannot_see_are_swept_after_removal(sys61):
    sys61.kernel.pins["libcrc32c"] = "crc32c_intel"
    sys61.apply(["nf_nat"])
    plan = sys61.plan(["nf_nat"], state="absent")
    assert "crc32c_intel" not in plan.results[0].removed  # refcount 1, no holder to explain it
    result = sys61.apply(["nf_nat"], state="absent").results[0]
    assert result.removed[-1] == "crc32c_intel" and sys61.kernel.loaded() == []


def test_remove_keeps_dependencies_still_in_use(sys61):
    sys61.apply(["nf_nat", "xt_conntrack"])
    sys61.apply(["nf_nat"], state="absent")
    assert sorted(sys61.kernel.loaded()) == sorted(
        modnames(sys61.modprobe("xt_conntrack")))


def test_in_use_fails_naming_holders_and_removes_nothing(sys61):
    sys61.apply(["nf_nat"])
    calls = len(sys61.kernel.calls)
    with pytest.raises(KmodError, match=r"nf_conntrack is in use \(used by nf_nat; refcount 1\)") as info:
        sys61.apply(["nf_conntrack"], state="absent")
    assert info.value.details["holders"] == ["nf_nat"]
    assert len(sys61.kernel.calls) == calls


def test_in_use_by_a_process(sys61):
    sys61.kernel.load("dummy", refcnt=2)
    with pytest.raises(KmodError, match="dummy is in use .*process or device.*refcount 2"):
        sys61.plan(["dummy"], state="absent")


def test_remove_several_in_any_order(sys61):
    sys61.apply(["nf_nat"])
    plan = sys61.apply(["nf_conntrack", "nf_nat"], state="absent")
    assert plan.results[0].removed[0] == "nf_conntrack"
    assert plan.results[1].removed == ["nf_nat"]
    assert sys61.kernel.loaded() == []


def test_remove_a_loaded_module_the_tree_does_not_know(sys61):
    sys61.kernel.load("dummy")
    sys61.kernel.register("outoftree", ["dummy"])
    plan = sys61.apply(["outoftree"], state="absent")
    assert plan.results[0].removed == ["outoftree", "dummy"]
    with pytest.raises(ModuleLookupError, match="outoftree"):
        sys61.plan(["outoftree"], state="absent")


def test_config_alias_to_a_missing_module(sys61):
    sys61.conf("alias foo no_such_module\n")
    assert sys61.modprobe("foo") == []
    with pytest.raises(ModuleLookupError, match="no_such_module.*no file"):
        sys61.plan(["foo"])


def test_remove_command_runs_instead(sys61):
    sys61.kernel.load("dummy")
    sys61.conf("remove dummy /bin/echo bye\n")
    plan = sys61.apply(["dummy"], state="absent")
    assert plan.actions == [RunCommand("dummy", "/bin/echo bye", "")]
    assert sys61.commands == [("/bin/echo bye", {"MODPROBE_MODULE": "dummy"})]


def test_runtime_diff(sys61):
    plan = sys61.plan(["nf_nat"])
    assert plan.diff[0]["before"] == ""
    assert plan.diff[0]["after"].split() == sorted(NF_NAT_CHAIN)


# --- persistent --------------------------------------------------------------------------

def test_persistent_files(sys61):
    etc = sys61.root / "etc"
    (etc / "modprobe.d").mkdir(parents=True)
    (etc / "modprobe.d/dummy.conf").write_text("# mine\nalias foo dummy\noptions dummy numdummies=1\n")
    plan = sys61.apply(["dummy"], params="numdummies=2", persistent="present")
    assert (etc / "modules-load.d/dummy.conf").read_text().splitlines()[-1] == "dummy"
    assert (etc / "modprobe.d/dummy.conf").read_text() == \
        "# mine\nalias foo dummy\noptions dummy numdummies=2\n"
    assert {d["after_header"] for d in plan.diff[1:]} == {str(etc / "modules-load.d/dummy.conf"),
                                                          str(etc / "modprobe.d/dummy.conf")}
    # modprobe reads the options we wrote
    assert sys61.modprobe("dummy")[0].endswith("numdummies=2 ")
    assert not any(isinstance(a, WriteFile) for a in
                   sys61.plan(["dummy"], params="numdummies=2", persistent="present").actions)
    sys61.apply(["dummy"], state="absent", persistent="absent")
    assert not (etc / "modules-load.d/dummy.conf").exists()
    assert (etc / "modprobe.d/dummy.conf").read_text() == "# mine\nalias foo dummy\n"


def test_persistent_options_overridden_by_later_lines(sys61):
    # A file sorting before ours loses to us, one sorting after wins over us: the kernel keeps
    # the last value of a parameter in the option string modprobe builds.
    sys61.conf("options dummy numdummies=5\n", "aa-early.conf")
    sys61.conf("options dummy numdummies=0 unrelated=1\n", "zz-vendor.conf")
    plan = sys61.apply(["dummy"], params="numdummies=3", persistent="present")
    insmod = sys61.modprobe("dummy")[-1].split()[2:]
    last = {k: v for k, _sep, v in (w.partition("=") for w in insmod)}
    assert last["numdummies"] != "3"  # modprobe's verdict: ours does not hold at boot
    assert plan.results[0].params_overridden == {
        "numdummies": f"{sys61.root}/etc/modprobe.d/zz-vendor.conf:1"}


def test_persistent_options_that_hold(sys61):
    sys61.conf("options dummy numdummies=5\n", "aa-early.conf")
    plan = sys61.apply(["dummy"], params="numdummies=3", persistent="present")
    insmod = sys61.modprobe("dummy")[-1].split()[2:]
    assert {k: v for k, _sep, v in (w.partition("=") for w in insmod)}["numdummies"] == "3"
    assert plan.results[0].params_overridden == {}
