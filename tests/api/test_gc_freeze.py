"""A server that opens its own shop freezes what startup created; a test's shop, or the setting off, does not."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from shopmind.api.main import create_app
from shopmind.config import load_settings
from shopmind.shop import Shop


@pytest.fixture
def unfrozen():
    gc.unfreeze()
    yield
    gc.unfreeze()  # whatever the test froze goes back to the collector


@pytest.mark.parametrize("freeze", [True, False])
def test_startup_objects_are_frozen_only_when_asked(tmp_path: Path, unfrozen, freeze: bool):
    settings = load_settings(home=tmp_path / "home", cache_url="memory://", serve_gc_freeze=freeze)
    Shop.init(settings)[0].close()
    with TestClient(create_app(settings=settings)) as client:
        frozen = gc.get_freeze_count()
        store = client.app.state.shop.store
        tracked = any(store is o for o in gc.get_objects())  # frozen objects are in no generation
    if freeze:
        assert frozen > 10_000 and not tracked
    else:
        assert frozen == 0 and tracked


def test_a_shop_passed_in_is_not_frozen(shop, unfrozen):
    with TestClient(create_app(shop=shop)):
        assert gc.get_freeze_count() == 0
