"""The registry's promoted-version pointer, as serving reads it on every request."""

from __future__ import annotations

import polars as pl
import pytest

from shopmind.models.popularity import TrendingPopularity
from shopmind.storage.cache import CacheMiss
from shopmind.training.registry import ModelRegistry


def _model(item: str) -> TrendingPopularity:
    return TrendingPopularity().fit(pl.DataFrame({"item_id": [item], "type": ["view"], "ts_ms": [0]}))


def test_a_promotion_by_another_process_is_seen_on_the_next_read(tmp_path):
    serving, other = ModelRegistry(tmp_path), ModelRegistry(tmp_path)  # two processes' registries
    first = other.register("popularity", _model("a"), card={}, subjects=[])
    assert serving.current_version("popularity") == first
    second = other.register("popularity", _model("b"), card={}, subjects=[])
    assert len(second) == len(first)  # same size: the stat check must not rely on it
    assert serving.current_version("popularity") == second
    for _ in range(3):  # flip back and forth at once: each replacement is a new file
        other.promote("popularity", first)
        assert serving.current_version("popularity") == first
        other.promote("popularity", second)
        assert serving.current_version("popularity") == second
    assert other.rollback("popularity") == first and serving.current_version("popularity") == first


def test_cached_only_load_refuses_to_read_a_model_from_disk(tmp_path):
    registry = ModelRegistry(tmp_path)
    version = ModelRegistry(tmp_path).register("popularity", _model("a"), card={}, subjects=[])
    with pytest.raises(CacheMiss):
        registry.load_current("popularity", cached_only=True)
    assert registry.load_current("popularity")[0] == version
    assert registry.load_current("popularity", cached_only=True)[0] == version


def test_a_served_model_replaced_by_a_promotion_is_announced_once(tmp_path):
    """The server warms the states a new behaviour version needs when it loads it (api/main.py): the
    registry says when a loaded model was replaced, not on the first load nor on every read."""
    serving, other = ModelRegistry(tmp_path), ModelRegistry(tmp_path)
    switches: list[tuple[str, str]] = []
    serving.on_switch = lambda kind, version: switches.append((kind, version))
    first = other.register("popularity", _model("a"), card={}, subjects=[])
    assert serving.load_current("popularity")[0] == first and switches == []  # the first load
    second = other.register("popularity", _model("b"), card={}, subjects=[])
    for _ in range(3):
        assert serving.load_current("popularity")[0] == second
    assert switches == [("popularity", second)]
    other.rollback("popularity")
    serving.load_current("popularity")
    assert switches == [("popularity", second), ("popularity", first)]
