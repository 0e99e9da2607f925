"""The registry against writers beside it: two API workers or a CLI command and the server, each with its
own ModelRegistry on the same folder, erasing, registering, promoting and rolling back at once."""

from __future__ import annotations

import json
import threading

import polars as pl
import pytest

from shopmind.exceptions import InvalidInputError
from shopmind.models.popularity import TrendingPopularity
from shopmind.training.registry import ModelRegistry


def _model(item: str = "i1") -> TrendingPopularity:
    return TrendingPopularity().fit(pl.DataFrame({"item_id": [item], "type": ["view"], "ts_ms": [0]}))


def _together(*calls) -> list:
    """Run the calls in threads released at once; what each returned, or the exception it raised."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def go(i, call):
        barrier.wait()
        try:
            results[i] = call()
        except Exception as exc:  # noqa: BLE001 - reported by the test
            results[i] = exc

    threads = [threading.Thread(target=go, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def _lineage(d) -> set[str]:
    return set(pl.read_parquet(d / "subjects.parquet")["pseudonym"].to_list())


def test_concurrent_erasures_each_reach_the_lineage_and_the_card(tmp_path):
    users = [f"user{n}" for n in range(2000)]
    for trial in range(8):
        root = tmp_path / f"m{trial}"
        version = ModelRegistry(root).register("popularity", _model(), {}, users)
        one, two = ModelRegistry(root), ModelRegistry(root)  # two processes
        results = _together(lambda: one.erase_subject("user1"), lambda: two.erase_subject("user2"))
        assert results == [{"models.versions": 1}] * 2, results
        d = root / "popularity" / version
        assert not _lineage(d) & {"user1", "user2"}
        assert len(_lineage(d)) == len(users) - 2
        assert json.loads((d / "card.json").read_text())["erased_since_training"] == 2
        assert not [p.name for p in d.iterdir() if p.name.startswith(".")]  # no temp files left


def test_registrations_in_the_same_second_get_their_own_versions(tmp_path):
    for trial in range(6):
        root = tmp_path / f"m{trial}"
        first, second = ModelRegistry(root), ModelRegistry(root)
        results = _together(
            lambda: first.register("popularity", _model("i1"), {"trained_by": "alice"}, ["alice"]),
            lambda: second.register("popularity", _model("i2"), {"trained_by": "bob"}, ["bob"]))
        assert all(isinstance(v, str) for v in results), results
        assert len(set(results)) == 2
        for version, name in zip(results, ("alice", "bob")):
            d = root / "popularity" / version
            card = json.loads((d / "card.json").read_text())
            assert card["version"] == version and card["trained_by"] == name
            assert _lineage(d) == {name}
        assert first.erase_subject("alice") == {"models.versions": 1}
        assert not [p.name for p in (root / "popularity").iterdir() if p.name.startswith(".") and p.is_dir()]
        assert ModelRegistry(root).current_version("popularity") in results


def test_a_rollback_and_a_promotion_at_once_leave_a_consistent_pointer_and_history(tmp_path):
    registry = ModelRegistry(tmp_path)
    a, b, c = (registry.register("popularity", _model(), {}, [], promote=False) for _ in range(3))
    base = tmp_path / "popularity"
    for _ in range(40):
        for f in ("CURRENT", "history.json"):
            (base / f).unlink(missing_ok=True)
        registry.promote("popularity", a)
        registry.promote("popularity", b)  # history [a], current b
        cli, training = ModelRegistry(tmp_path), ModelRegistry(tmp_path)
        results = _together(lambda: cli.rollback("popularity"), lambda: training.promote("popularity", c))
        assert not [r for r in results if isinstance(r, Exception)], results
        state = ((base / "CURRENT").read_text(), json.loads((base / "history.json").read_text()))
        # rollback first: a, then c promoted over it; promotion first: c, then rolled back to b
        assert state in ((c, [a]), (b, [a])), state


@pytest.mark.parametrize("version", ["../popularity/v20260101-000000-1", "v20260101-000000-1/../x", "latest", ""])
def test_promote_refuses_what_is_not_a_version(tmp_path, version):
    registry = ModelRegistry(tmp_path)
    registry.register("popularity", _model(), {}, ["u1"])
    (tmp_path / "behaviour").mkdir()
    with pytest.raises(InvalidInputError) as info:
        registry.promote("behaviour", version)
    assert info.value.field == "version"
    assert registry.current_version("behaviour") is None


def test_the_cli_refuses_a_path_as_a_version_with_exit_2(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from shopmind.cli.main import app

    monkeypatch.setenv("SHOPMIND_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SHOPMIND_DATABASE_URL", raising=False)
    runner = CliRunner()
    assert runner.invoke(app, ["init"]).exit_code == 0
    r = runner.invoke(app, ["models", "promote", "behaviour", "../popularity/v20260101-000000-1"])
    assert r.exit_code == 2, r.output


def test_a_model_gated_against_a_champion_that_was_replaced_meanwhile_is_not_promoted(tmp_path):
    """Two overlapping trainings: B was gated against C; A (better) promoted while B trained on; B then
    replaced A although A beats it. A registration promotes only if its gate's champion is still current."""
    registry = ModelRegistry(tmp_path / "m")
    c = registry.register("behaviour", _model("c"), {}, [])
    a = registry.register("behaviour", _model("a"), {}, [], if_current=c)   # A was gated against C: promoted
    assert registry.current_version("behaviour") == a
    b = registry.register("behaviour", _model("b"), {}, [], if_current=c)   # B too, but C is no longer current
    assert registry.current_version("behaviour") == a and (tmp_path / "m" / "behaviour" / b).is_dir()
    first = ModelRegistry(tmp_path / "n").register("behaviour", _model("x"), {}, [], if_current=None)
    assert ModelRegistry(tmp_path / "n").current_version("behaviour") == first  # no champion yet: promoted
