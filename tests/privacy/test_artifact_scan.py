"""After a demo-like run, no raw identifier or personal data is anywhere in shopmind's files.

The run: init, generate a shop (outside the home folder: the export is the shop's own data), import it,
train the models, replay history into the risk engine and train its model, then serve requests over
HTTP (ingestion, recommendations, risk decisions, a bad request that carries raw ids, the dashboard's
reads, an erasure) with every log record written to a file at DEBUG. Then every byte of every file under
the home folder (database, WAL, logs, model registry, keys) is searched for each raw user id, e-mail,
phone number, address, device id and card id of the generated data.
"""

from __future__ import annotations

import logging
import re

import polars as pl
import pytest
from typer.testing import CliRunner

from shopmind.cli.main import app as cli
from tests.conftest import auth
from tests.scanning import searchable


@pytest.mark.slow
def test_no_raw_identifier_or_personal_data_in_any_file_after_a_demo_run(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from shopmind.api.main import create_app
    from shopmind.auth import Scope, create_key
    from shopmind.config import load_settings
    from shopmind.shop import Shop

    home, data = tmp_path / "home", tmp_path / "export"
    monkeypatch.setenv("SHOPMIND_HOME", str(home))
    handler = logging.FileHandler(home.parent / "capture.log")
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    # The test's own HTTP client logs each URL it calls (user ids in paths); that is the caller's log.
    quiet = {name: logging.getLogger(name).level for name in ("httpx", "httpx2")}
    for name in quiet:
        logging.getLogger(name).setLevel(logging.WARNING)
    runner = CliRunner()
    try:
        for args in (["init"], ["generate", "--out", str(data), "--users", "300", "--days", "20", "--seed", "4"],
                     ["import", str(data)], ["train", "--budget", "10"],
                     ["risk", "replay", "--behaviour-as-of", "auto", "--behaviour-budget", "5"], ["risk", "train"]):
            result = runner.invoke(cli, args)
            assert result.exit_code == 0, (args, result.output)

        users = pl.read_parquet(data / "users.parquet")
        orders = pl.read_parquet(data / "orders.parquet")
        shop = Shop.open(load_settings())
        keys = {scope: create_key(shop.store, scope.value, frozenset({scope})) for scope in Scope}
        with TestClient(create_app(shop=shop)) as client:
            some = users.head(20).to_dicts()
            for i, u in enumerate(some):
                assert client.get(f"/v1/users/{u['user_id']}/recommendations?k=5",
                                  headers=auth(keys[Scope.recommend])).status_code == 200
                r = client.post("/v1/risk/decisions", headers=auth(keys[Scope.risk]), json={
                    "event_id": f"scan-{i}", "kind": "order", "user_id": u["user_id"], "amount": 42.0,
                    "email": u["email"], "card": orders["payment_instrument"][0], "device_id": orders["device_id"][0],
                    "ip": "198.51.100.7", "ip_country": "DE", "shipping_country": "DE"})
                assert r.status_code == 200, r.text
                assert client.get(f"/v1/users/{u['user_id']}/events", headers=auth(keys[Scope.analyst])).status_code == 200
            ok = client.post("/v1/events", headers=auth(keys[Scope.ingest]), json=[
                {"event_id": "scan-ev-1", "user_id": some[0]["user_id"], "type": "view", "item_id": "i000001",
                 "ts": "2026-01-20T10:00:00Z"}])
            assert ok.status_code == 200, ok.text
            bad = client.post("/v1/events", headers=auth(keys[Scope.ingest]), json=[
                {"event_id": "scan-ev-2", "user_id": some[1]["user_id"], "type": "teleport", "ts": "2026-01-20T10:00:00Z"}])
            assert bad.status_code == 422 and some[1]["user_id"] not in bad.text
            bad_risk = client.post("/v1/risk/decisions", headers=auth(keys[Scope.risk]), json={
                "event_id": "scan-bad", "kind": "order", "user_id": some[2]["user_id"], "email": some[2]["email"],
                "amount": -1})
            assert bad_risk.status_code == 422
            assert some[2]["user_id"] not in bad_risk.text and some[2]["email"] not in bad_risk.text
            assert client.delete(f"/v1/users/{some[3]['user_id']}", headers=auth(keys[Scope.admin])).status_code == 200
        shop.close()
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        for name, level in quiet.items():
            logging.getLogger(name).setLevel(level)
        handler.close()

    needles = set(users["user_id"]) | set(users["email"]) | set(users["phone"]) | set(users["address"])
    needles |= set(orders["device_id"].drop_nulls()) | set(orders["payment_instrument"].drop_nulls())
    pattern = re.compile(b"|".join(re.escape(n.encode()) for n in sorted(needles, key=len, reverse=True)))
    files = [p for p in home.rglob("*") if p.is_file()] + [home.parent / "capture.log"]
    assert any(p.suffix == ".db" for p in files) and any("models" in p.parts for p in files)
    assert (home.parent / "capture.log").stat().st_size > 0  # the run did log
    found = {}
    for path in files:
        hits = {m.group(0).decode(errors="replace") for m in pattern.finditer(searchable(path))}
        if hits:
            found[str(path.relative_to(tmp_path))] = sorted(hits)[:5]
    assert not found, found
    # the scan can find what it looks for: the export it must not copy holds every needle, and a
    # needle in a compressed parquet file (as the model registry writes them) is found
    assert pattern.search(users.write_csv().encode())
    planted = tmp_path / "planted.parquet"
    users.select("email").write_parquet(planted)
    assert len(set(pattern.findall(searchable(planted)))) == users.height
    assert any(p.suffix == ".parquet" for p in files)
