# SPDX-License-Identifier: GPL-3.0-or-later
"""Run a module's main() the way Ansible does, for the module tests of this directory."""

from __future__ import annotations

import json
import types
import typing as t

import pytest
from ansible.module_utils.testing import patch_module_args


@pytest.fixture
def run_module(capsys) -> t.Callable[..., dict]:
    """run_module(module, check=False, diff=True, **args) -> the module's result.

    ``module`` is the imported module file (e.g. ``kmod_blacklist``); its exit status
    must agree with ``failed`` in the result.
    """

    def run(module: types.ModuleType, check: bool = False, diff: bool = True, **args: t.Any) -> dict:
        args = {**args, "_ansible_check_mode": check, "_ansible_diff": diff}
        with patch_module_args(args), pytest.raises(SystemExit) as exc:
            module.main()
        result = json.loads(capsys.readouterr().out)
        assert bool(exc.value.code) == bool(result.get("failed"))
        return result

    return run
