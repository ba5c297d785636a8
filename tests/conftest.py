"""Shared test setup: the data-check cache goes to a temporary folder, never ~/.cache."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _medseg_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("MEDSEG_CACHE", str(tmp_path_factory.mktemp("medseg-cache")))
    yield
    mp.undo()
