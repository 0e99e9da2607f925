"""Several API workers start at once on a database an upgrade left one revision behind: each runs
SqlStore.migrate. They take turns; before, two ran the same ALTER TABLE and one failed to start."""

from __future__ import annotations

import multiprocessing

from shopmind.storage.sql import MIGRATIONS, SqlStore


def _to_revision(url: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    store, cfg = SqlStore(url), Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    store.close()


def _worker(url: str, barrier, results) -> None:
    barrier.wait()
    try:
        store = SqlStore(url)
        store.migrate()
        store.close()
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")


def test_two_processes_migrating_at_once_both_start(tmp_path):
    context = multiprocessing.get_context("fork")
    for trial in range(3):
        url = f"sqlite:///{tmp_path / f'shop{trial}.db'}"
        _to_revision(url, "0005")  # the schema before the newest migration (an ALTER TABLE)
        barrier, results = context.Barrier(2), context.Queue()
        workers = [context.Process(target=_worker, args=(url, barrier, results)) for _ in range(2)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
        assert sorted(results.get(timeout=5) for _ in workers) == ["ok", "ok"]
