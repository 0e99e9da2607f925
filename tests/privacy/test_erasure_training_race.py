"""A training that starts while an erasure runs: the receipt is committed before the user's rows are
deleted, so the training can read them; its registration must still scrub the user from the new version."""

from __future__ import annotations

import json
import threading

import polars as pl

from tests.conftest import event

USER = "race-subject-4711"
OTHER = "bystander-2"


class _First:
    """An erasable store run before every other one: the receipt is committed, nothing is deleted yet."""

    name = "first"

    def __init__(self, action):
        self.action = action

    def erase_subject(self, pseudonym: str) -> dict[str, int]:
        self.action(pseudonym)
        return {}


def _fill_shop(shop) -> None:
    shop.ingest("users", [{"user_id": u, "consent_personalization": True} for u in (USER, OTHER)], actor="t")
    shop.ingest("items", [{"item_id": f"i{n}", "title": f"Item {n}", "category": "A"} for n in range(5)], actor="t")
    shop.ingest("events", [event(n, user=USER, item=f"i{n % 5}") for n in range(6)]
                + [event(100 + n, user=OTHER, item="i1") for n in range(3)], actor="t")


def test_an_unfinished_erasure_is_not_counted_as_seen(shop):
    _fill_shop(shop)
    shop.erase_user(OTHER, actor="dpo")
    finished = shop.erasure.newest_receipt()
    during = []
    shop.erasure._stores.insert(0, _First(lambda p: during.append(shop.erasure.newest_receipt())))
    shop.erase_user(USER, actor="dpo")
    assert during == [finished]  # the receipt in progress is not before the starting point
    assert shop.erasure.newest_receipt() == finished + 1  # once done, it is


def test_a_training_started_during_an_erasure_does_not_keep_the_user(shop, monkeypatch):
    _fill_shop(shop)
    pseudonym = shop.pseudonym(USER)
    read_done, erasure_done = threading.Event(), threading.Event()
    result: dict = {}

    read = shop.training_events

    def training_events(*args, **kwargs):
        frame = read(*args, **kwargs)
        result.setdefault("read_user", pseudonym in set(frame["user_pseudonym"].to_list()))
        read_done.set()
        return frame

    register = shop.registry.register

    def slow_register(*args, **kwargs):
        erasure_done.wait(30)  # the model trains for longer than the erasure runs
        return register(*args, **kwargs)

    monkeypatch.setattr(shop, "training_events", training_events)
    monkeypatch.setattr(shop.registry, "register", slow_register)
    trainer: list[threading.Thread] = []

    def start_training(_pseudonym):
        # the receipt is committed, no store has forgotten the user yet: a scheduled training starts
        thread = threading.Thread(target=lambda: result.update(shop.train(actor="cron")))
        thread.start()
        trainer.append(thread)
        assert read_done.wait(30)

    shop.erasure._stores.insert(0, _First(start_training))
    shop.erase_user(USER, actor="dpo")
    erasure_done.set()
    trainer[0].join(60)
    assert not trainer[0].is_alive()
    assert result["read_user"], "the training read the user's events (the interleaving under test)"
    version = result["popularity"]["version"]
    d = shop.registry.root / "popularity" / version
    assert pseudonym not in set(pl.read_parquet(d / "subjects.parquet")["pseudonym"].to_list())
    assert json.loads((d / "card.json").read_text())["erased_since_training"] == 1


def test_an_interrupted_erasure_holds_the_starting_point_until_it_is_finished(shop):
    from shopmind.storage import schema

    _fill_shop(shop)
    with shop.store.transaction() as conn:  # what a crash right after the receipt's commit leaves
        conn.execute(schema.erasure_receipts.insert().values(
            pseudonym=shop.pseudonym(USER), erased_ms=1, actor="dpo", removed="{}"))
    assert shop.erasure.newest_receipt() == 0
    shop.erase_user(OTHER, actor="dpo")
    assert shop.erasure.newest_receipt() == 0
    shop.erase_user(USER, actor="dpo")  # running it again finishes it
    assert shop.erasure.newest_receipt() == 3
