"""Fixtures of the identity tests (helpers live in identity_testlib)."""

from __future__ import annotations

from pathlib import Path

import pytest
from identity_testlib import Env, make_env


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return make_env(tmp_path)
