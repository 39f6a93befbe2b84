# SPDX-License-Identifier: GPL-3.0-or-later
"""Put this directory's test helpers (fake_kernel, kmod_oracle, ...) on sys.path.

ansible-test imports test files as packages, so a test file's own directory is not on
sys.path there; this conftest runs before any test of the directory is imported.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
