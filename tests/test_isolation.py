"""The suite's own isolation: no test, and no fixture a module shares among its tests, writes to the user's cache
(tests/conftest.py `module_env`, `isolated_env`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def module_cache_dir() -> str | None:
    return os.environ.get("TOXCMP_CACHE_DIR")


def test_a_module_fixture_gets_a_cache_dir_of_its_own(module_cache_dir, tmp_path_factory, tmp_path):
    base = tmp_path_factory.getbasetemp()
    assert module_cache_dir and Path(module_cache_dir).is_relative_to(base)
    assert Path(os.environ["TOXCMP_CACHE_DIR"]) == tmp_path / "cache" != Path(module_cache_dir)  # a test: its own
    assert "HF_TOKEN" not in os.environ
