"""The registry when a writer dies halfway: what the next writer, erasure and rollback find."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import polars as pl
import pytest

import shopmind.training.registry as registry_module
from shopmind.models.popularity import TrendingPopularity
from shopmind.training.registry import ModelRegistry, _host
from tests.conftest import event


class _Killed(BaseException):
    """Stands for SIGKILL: raised where the process would die, and caught by the test only."""


def _model(item: str) -> TrendingPopularity:
    return TrendingPopularity().fit(pl.DataFrame({"item_id": [item], "type": ["view"], "ts_ms": [0]}))


def _lineage(folder) -> set[str]:
    return set(pl.read_parquet(folder / "subjects.parquet")["pseudonym"].to_list())


def test_a_version_appears_already_scrubbed_of_users_erased_while_it_trained(shop, monkeypatch):
    """A training reads its data, the user is erased, then the model is registered. The version must not
    name the user at any moment it exists: a training killed right after registering (before any clean-up
    of its own) used to leave the erased pseudonym in a promoted version's lineage, with the receipt
    saying the erasure was done."""
    shop.ingest("users", [{"user_id": u, "consent_personalization": True} for u in ("gone", "stays")], actor="t")
    shop.ingest("items", [{"item_id": f"i{n}", "title": f"Item {n}", "category": "A"} for n in range(3)], actor="t")
    shop.ingest("events", [event(n, user="gone", item=f"i{n % 3}") for n in range(4)]
                + [event(10 + n, user="stays", item="i1") for n in range(3)], actor="t")
    gone = shop.pseudonym("gone")
    read = shop.training_events

    def read_then_erase(*args, **kwargs):
        frame = read(*args, **kwargs)
        if not hasattr(read_then_erase, "done"):
            read_then_erase.done = True
            shop.erase_user("gone", actor="dpo")  # finishes while the model trains
        return frame

    register = shop.registry.register
    seen: dict[str, set[str]] = {}

    def register_then_die(kind, *args, **kwargs):
        version = register(kind, *args, **kwargs)
        seen[kind] = _lineage(shop.registry.root / kind / version)  # what a SIGKILL here would leave
        card = json.loads((shop.registry.root / kind / version / "card.json").read_text())
        seen[kind + " erased"] = card["erased_since_training"]
        raise _Killed

    monkeypatch.setattr(shop, "training_events", read_then_erase)
    monkeypatch.setattr(shop.registry, "register", register_then_die)
    with pytest.raises(_Killed):
        shop.train(actor="cron")
    assert gone not in seen["popularity"] and shop.pseudonym("stays") in seen["popularity"]
    assert seen["popularity erased"] == 1  # counted, so retraining can be scheduled
    assert all(r.removed for r in shop.erasure.receipts(gone))


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_staging_folders_of_dead_trainings_are_deleted_by_the_next_writer(tmp_path):
    """A training killed while it registered leaves its hidden staging folder, lineage included, which
    erasure and key rotation (they walk versions) never reached. The next writer deletes every staging
    folder whose process is gone, and only those."""
    registry = ModelRegistry(tmp_path)
    registry.register("popularity", _model("a"), card={}, subjects=["p-bystander"])
    base = tmp_path / "popularity"

    def staging(name: str, age_s: float = 0.0):
        folder = base / name
        folder.mkdir()
        pl.DataFrame({"pseudonym": ["p-erased"]}).write_parquet(folder / "subjects.parquet")
        if age_s:
            then = time.time() - age_s
            os.utime(folder, (then, then))
        return folder

    dead = staging(f".staging-{_host()}-{_dead_pid()}-abc")
    alive = staging(f".staging-{_host()}-{os.getpid()}-def")          # a training registering right now
    foreign = staging(".staging-otherhost-1-ghi")                      # another host's, fresh
    legacy = staging(".staging-jkl", age_s=2 * registry_module.FOREIGN_STAGING_STALE_S)
    registry.erase_subject("p-erased")
    assert not dead.exists() and not legacy.exists()
    assert alive.exists() and foreign.exists()


def test_an_erasure_killed_between_the_card_and_the_lineage_is_still_counted(tmp_path, monkeypatch):
    """The rerun of an interrupted erasure must leave the version's card counting it: it schedules
    retraining. Killed after the lineage was rewritten and before the card, the count was lost for good."""
    registry = ModelRegistry(tmp_path)
    version = registry.register("popularity", _model("a"), card={}, subjects=["p-1", "p-2"])
    write_lineage = registry_module._write_lineage

    def lineage_then_die(path, subjects):
        write_lineage(path, subjects)
        raise _Killed

    monkeypatch.setattr(registry_module, "_write_lineage", lineage_then_die)
    with pytest.raises(_Killed):
        registry.erase_subject("p-1")
    monkeypatch.setattr(registry_module, "_write_lineage", write_lineage)
    registry.erase_subject("p-1")  # the documented way to finish it: run it again
    folder = tmp_path / "popularity" / version
    assert _lineage(folder) == {"p-2"}
    assert registry.card("popularity", version)["erased_since_training"] >= 1


def test_a_rollback_after_a_promotion_killed_halfway_goes_back(tmp_path, monkeypatch):
    """A promotion writes the history, then the pointer. Killed between the two, the history's newest
    entry is the version still serving; a rollback then returned that very version and changed nothing."""
    registry = ModelRegistry(tmp_path)
    first = registry.register("popularity", _model("a"), card={}, subjects=[])
    second = registry.register("popularity", _model("b"), card={}, subjects=[])
    write = registry_module._write_atomic

    def history_then_die(path, text):
        write(path, text)
        if path.name == "history.json":
            raise _Killed

    monkeypatch.setattr(registry_module, "_write_atomic", history_then_die)
    with pytest.raises(_Killed):
        registry.promote("popularity", first)
    monkeypatch.setattr(registry_module, "_write_atomic", write)
    assert registry.current_version("popularity") == second  # the pointer was never replaced
    assert registry.rollback("popularity") == first
    assert registry.current_version("popularity") == first
    registry.promote("popularity", second)  # a rerun of the promotion does not stack the history
    assert json.loads((tmp_path / "popularity" / "history.json").read_text()) == [first]


def test_a_reader_let_in_after_a_promotion_does_not_load_the_old_version_back(tmp_path, monkeypatch):
    """A reader that read the pointer just before a promotion, and took the lock after another reader had
    loaded the new version, loaded the old one back and announced it (a server's warm-up of up to 10,000
    users), and the next request loaded the new one a third time (found by a review)."""
    registry = ModelRegistry(tmp_path)
    old = registry.register("popularity", _model("a"), card={}, subjects=[])
    assert registry.load_current("popularity")[0] == old
    new = ModelRegistry(tmp_path).register("popularity", _model("b"), card={}, subjects=[])  # another process
    announced, loads = [], []
    registry.on_switch = lambda kind, version: announced.append(version)
    assert registry.load_current("popularity")[0] == new  # the other reader, first through the lock
    pointer = registry.current_version
    calls = iter([old])  # this reader's pointer read happened before the promotion

    def stale_then_current(kind):
        return next(calls, None) or pointer(kind)

    load = TrendingPopularity.load
    monkeypatch.setattr(registry, "current_version", stale_then_current)
    monkeypatch.setattr(TrendingPopularity, "load", classmethod(lambda cls, path: loads.append(path) or load(path)))
    assert registry.load_current("popularity")[0] == new
    assert loads == [] and announced == [new]


@pytest.mark.skipif(not __import__("shopmind.models.text", fromlist=["available"]).available(),
                    reason="the 'text' extra (packaged MiniLM) is not installed")
def test_a_damaged_title_vector_cache_is_recomputed_and_replaced_whole(tmp_path):
    """The cache of title embeddings was rewritten in place: a training killed mid-write left a file that
    made every later training fail with a traceback, the schedule included (found by a review)."""
    from shopmind.training.pipeline import content_vectors

    items = pl.DataFrame({"item_id": ["a", "b"], "title": ["Kettle", "Teapot"], "category": ["Home", "Home"]})
    cache = tmp_path / "content_vectors.parquet"
    first = content_vectors(cache, ["a", "b"], items)
    cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])  # what a killed write leaves
    again = content_vectors(cache, ["a", "b"], items)
    assert np.allclose(first, again)
    assert pl.read_parquet(cache).height == 2  # replaced by a whole file
    assert [p.name for p in tmp_path.iterdir()] == ["content_vectors.parquet"]  # no temporary file left
