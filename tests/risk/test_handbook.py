"""Fraud evaluation with the handbook protocol: loading, time split, known-compromised cards, metrics,
point-in-time features (no label leakage) and the CLI command."""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from shopmind.cli.risk_evaluate import evaluate
from shopmind.exceptions import InvalidInputError
from shopmind.risk.handbook import (average_precision, card_precision_at_k, evaluate_transactions,
                                    handbook_split, load_transactions, roc_auc, run_evaluation)
from shopmind.risk.handbook_features import HANDBOOK_FEATURES, compute_features

START = dt.datetime(2024, 1, 1)


def synthetic(n_cards: int = 300, n_terminals: int = 200, days: int = 40, seed: int = 1) -> pl.DataFrame:
    """Card transactions with planted fraud: large amounts, compromised terminals (every transaction for
    15 days, one new terminal every 3 days) and compromised cards (a third of their transactions, amount x5,
    for 6 days, one new card every 2 days)."""
    rng = np.random.default_rng(seed)
    mean_amount = rng.uniform(5, 100, n_cards)
    per_day = rng.uniform(0.5, 3.0, n_cards)
    counts = rng.poisson(np.tile(per_day, days))
    card = np.repeat(np.tile(np.arange(n_cards), days), counts)
    day = np.repeat(np.repeat(np.arange(days), n_cards), counts)
    seconds = day * 86_400 + rng.integers(0, 86_400, card.size)
    terminal = rng.integers(0, n_terminals, card.size)
    amount = np.round(np.abs(rng.normal(mean_amount[card], mean_amount[card] / 2)), 2)
    fraud = amount > 220
    for d in range(days):
        if d % 3 == 0:
            term = rng.integers(n_terminals)
            fraud |= (terminal == term) & (day >= d) & (day < d + 15)
        if d % 2 == 0:
            c = rng.integers(n_cards)
            hit = (card == c) & (day >= d) & (day < d + 6) & (rng.random(card.size) < 1 / 3)
            amount = np.where(hit, amount * 5, amount)
            fraud |= hit
    order = np.argsort(seconds, kind="stable")
    return pl.DataFrame({
        "TRANSACTION_ID": np.arange(card.size),
        "TX_DATETIME": [START + dt.timedelta(seconds=int(s)) for s in seconds[order]],
        "CUSTOMER_ID": card[order], "TERMINAL_ID": terminal[order] + 1000, "TX_AMOUNT": amount[order],
        "TX_FRAUD": fraud[order].astype(np.int64),
    })


@pytest.fixture(scope="module")
def data() -> pl.DataFrame:
    return synthetic()


# ---------------------------------------------------------------------------------------------- split

def test_split_windows_come_from_the_last_days(data):
    df = load_transactions(data)
    split = handbook_split(df)
    w = split.windows()
    assert (w["history_start"], w["train_start"], w["train_end"]) == ("2024-01-01", "2024-01-20", "2024-01-26")
    assert (w["delay_start"], w["delay_end"], w["test_start"], w["test_end"]) == (
        "2024-01-27", "2024-02-02", "2024-02-03", "2024-02-09")
    day = df["TX_DATETIME"].dt.date().to_numpy()
    train_days = day[split.train_mask]
    assert train_days.min() == np.datetime64("2024-01-20") and train_days.max() == np.datetime64("2024-01-26")
    assert day[split.test_window_mask].min() == np.datetime64("2024-02-03")
    assert not (split.test_mask & ~split.test_window_mask).any()

    other = handbook_split(df, train_days=5, delay_days=3, test_days=4).windows()
    assert (other["train_start"], other["train_end"], other["test_start"]) == ("2024-01-29", "2024-02-02", "2024-02-06")
    with pytest.raises(InvalidInputError) as err:
        handbook_split(df, train_days=30, delay_days=7, test_days=7)
    assert err.value.field == "TX_DATETIME"
    # no label delay would let each transaction read its own label through the label features (AP 1.0)
    with pytest.raises(InvalidInputError) as err:
        handbook_split(df, train_days=7, delay_days=0, test_days=7)
    assert err.value.field == "delay_days"


def _tx(rows):
    """rows: (card, day index, fraud)."""
    return pl.DataFrame({
        "TRANSACTION_ID": list(range(len(rows))),
        "TX_DATETIME": [START + dt.timedelta(days=d, hours=12, minutes=i) for i, (_, d, _) in enumerate(rows)],
        "CUSTOMER_ID": [c for c, _, _ in rows], "TERMINAL_ID": [1] * len(rows),
        "TX_AMOUNT": [10.0] * len(rows), "TX_FRAUD": [f for _, _, f in rows],
    })


def test_known_compromised_cards_leave_the_test_set():
    # 25 days: history 0..3, train 4..10, delay 11..17, test 18..24.
    rows = [("filler", d, 0) for d in range(25)]
    rows += [("hist", 1, 1)] + [("hist", d, 0) for d in (18, 22)]       # fraud before train: not "known"
    rows += [("A", 5, 1)] + [("A", d, 0) for d in (18, 24)]             # fraud in train: gone from every test day
    rows += [("B", 12, 1)] + [("B", d, 0) for d in (18, 19, 20, 23)]    # known from day 12 + 7 + 1 = 20 on
    rows += [("E", 19, 1), ("E", 24, 0)]                                # fraud in test: never known in time
    df = load_transactions(_tx(rows))
    split = handbook_split(df)
    assert split.windows()["train_start"] == "2024-01-05" and split.windows()["test_start"] == "2024-01-19"
    card = df["CUSTOMER_ID"].to_numpy()
    day = (df["TX_DATETIME"].dt.date() - START.date()).dt.total_days().to_numpy()
    kept = {(c, int(d)) for c, d, m in zip(card, day, split.test_mask) if m and c != "filler"}
    assert kept == {("hist", 18), ("hist", 22), ("B", 18), ("B", 19), ("E", 19), ("E", 24)}
    assert split.test_window_mask.sum() - split.test_mask.sum() == 4  # A x2, B on days 20 and 23


# -------------------------------------------------------------------------------------------- metrics

def test_card_precision_at_k_hand_computed():
    # day 1: cards a (0.9, fraud), b (0.8 genuine + 0.05 fraud -> card label 1, score 0.8), c (0.7, fraud)
    #   top 2 = a, b: 2 frauds -> 1.0; a and b are now detected.
    # day 2: a (0.99) and b (0.85) are left out; c (0.9, fraud), d (0.8, genuine) -> 0.5.
    days = ["d1"] * 4 + ["d2"] * 4
    cards = ["a", "b", "b", "c", "a", "c", "d", "b"]
    labels = [1, 0, 1, 1, 1, 1, 0, 0]
    scores = [0.9, 0.8, 0.05, 0.7, 0.99, 0.9, 0.8, 0.85]
    mean, per_day, fraud_cards = card_precision_at_k(days, cards, labels, scores, k=2)
    assert per_day == [1.0, 0.5] and mean == 0.75 and fraud_cards == [3, 1]
    # k larger than the cards of a day: still divided by k; day 1 detects a, b and c, so day 2 has no fraud left
    assert card_precision_at_k(days, cards, labels, scores, k=10)[1:] == ([0.3, 0.0], [3, 0])


def _ap_brute(y, s):
    thresholds = sorted(set(s), reverse=True)
    total, prev_recall = 0.0, 0.0
    for t in thresholds:
        pred = [v >= t for v in s]
        tp = sum(1 for p, l in zip(pred, y) if p and l)
        precision, recall = tp / sum(pred), tp / sum(y)
        total += (recall - prev_recall) * precision
        prev_recall = recall
    return total


def _auc_brute(y, s):
    pos = [v for v, l in zip(s, y) if l]
    neg = [v for v, l in zip(s, y) if not l]
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def test_average_precision_and_auc_match_their_definitions():
    rng = np.random.default_rng(3)
    for _ in range(5):
        y = rng.integers(0, 2, 60)
        s = np.round(rng.random(60), 1)  # many ties
        assert average_precision(y, s) == pytest.approx(_ap_brute(list(y), list(s)))
        assert roc_auc(y, s) == pytest.approx(_auc_brute(list(y), list(s)))
    assert math.isnan(average_precision([0, 0], [0.1, 0.2]))


# ----------------------------------------------------------------------------------- leakage (features)

@pytest.mark.parametrize("feature_set", ["shopmind", "handbook"])
def test_features_use_only_the_past_and_only_labels_older_than_the_delay(data, feature_set):
    df = load_transactions(data)
    delay = 7
    base = compute_features(df, feature_set, delay)
    t = df["TX_DATETIME"]
    cut = START + dt.timedelta(days=25, hours=13)
    rng = np.random.default_rng(0)
    # Labels not yet known at `cut` (younger than the delay) and everything after `cut` are changed.
    unknown = (t > cut - dt.timedelta(days=delay)).to_numpy()
    future = (t > cut).to_numpy()
    y = df["TX_FRAUD"].to_numpy().copy()
    y[unknown] = rng.integers(0, 2, int(unknown.sum()))
    amount = df["TX_AMOUNT"].to_numpy().copy()
    amount[future] = amount[future] * 7 + 1
    changed = df.with_columns(pl.Series("TX_FRAUD", y, dtype=pl.Int8), pl.Series("TX_AMOUNT", amount))
    after = compute_features(changed, feature_set, delay)
    past = ~future
    for name in base.columns:
        np.testing.assert_allclose(after[name].to_numpy()[past], base[name].to_numpy()[past], equal_nan=True,
                                   err_msg=name)
    # Sanity: the label features do read labels that are old enough.
    y_old = df["TX_FRAUD"].to_numpy().copy()
    y_old[~unknown] = 1 - y_old[~unknown]
    flipped = compute_features(df.with_columns(pl.Series("TX_FRAUD", y_old, dtype=pl.Int8)), feature_set, delay)
    assert any(not np.allclose(flipped[n].to_numpy()[past], base[n].to_numpy()[past], equal_nan=True)
               for n in base.columns)


def test_handbook_customer_windows_do_not_count_a_later_transaction_of_the_same_second():
    """The handbook's rolling windows over time-sorted rows end at the row itself; the first of two
    transactions in one second also counted the second (a later transaction: a leak from the future)."""
    raw = pl.DataFrame({"TRANSACTION_ID": [0, 1, 2],
                        "TX_DATETIME": ["2018-04-01 10:00:00", "2018-04-01 12:00:00", "2018-04-01 12:00:00"],
                        "CUSTOMER_ID": [7, 7, 7], "TERMINAL_ID": [1, 2, 3], "TX_AMOUNT": [10.0, 20.0, 500.0],
                        "TX_FRAUD": [0, 0, 1]})
    feats = compute_features(load_transactions(raw), "handbook")
    assert feats["CUSTOMER_ID_NB_TX_1DAY_WINDOW"].to_list() == [1.0, 2.0, 3.0]
    assert feats["CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW"].to_list()[:2] == [10.0, 15.0]


def test_handbook_feature_set_is_the_handbook_fifteen(data):
    feats = compute_features(load_transactions(data), "handbook")
    assert tuple(feats.columns) == HANDBOOK_FEATURES and len(HANDBOOK_FEATURES) == 15


# ----------------------------------------------------------------------------------------- bad input

def test_bad_files_name_the_column(tmp_path, data):
    missing = tmp_path / "missing.csv"
    data.drop("TERMINAL_ID").write_csv(missing)
    with pytest.raises(InvalidInputError) as err:
        load_transactions(missing)
    assert err.value.field == "TERMINAL_ID" and "TERMINAL_ID" in str(err.value)

    bad_label = tmp_path / "label.parquet"
    data.with_columns(pl.when(pl.col("TRANSACTION_ID") == 5).then(2).otherwise(pl.col("TX_FRAUD"))
                      .alias("TX_FRAUD")).write_parquet(bad_label)
    with pytest.raises(InvalidInputError) as err:
        load_transactions(bad_label)
    assert err.value.field == "TX_FRAUD"

    bad_time = tmp_path / "time.csv"
    data.with_columns(pl.col("TX_DATETIME").cast(pl.Utf8)).with_columns(
        pl.when(pl.col("TRANSACTION_ID") == 9).then(pl.lit("not a date")).otherwise(pl.col("TX_DATETIME"))
        .alias("TX_DATETIME")).write_csv(bad_time)
    with pytest.raises(InvalidInputError) as err:
        load_transactions(bad_time)
    assert err.value.field == "TX_DATETIME"

    dup = data.with_columns(pl.when(pl.col("TRANSACTION_ID") == 7).then(8).otherwise(pl.col("TRANSACTION_ID"))
                            .alias("TRANSACTION_ID"))
    with pytest.raises(InvalidInputError) as err:
        load_transactions(dup)
    assert err.value.field == "TRANSACTION_ID" and "8" not in str(err.value)  # no raw ids in messages

    negative = data.with_columns(pl.lit(-1.0).alias("TX_AMOUNT"))
    with pytest.raises(InvalidInputError) as err:
        load_transactions(negative)
    assert err.value.field == "TX_AMOUNT"
    with pytest.raises(InvalidInputError):
        load_transactions(tmp_path / "nope.csv")


# ------------------------------------------------------------------------------- end to end and CLI

@pytest.fixture(scope="module")
def csv_file(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("risk") / "tx.csv"
    data.write_csv(path)
    return path


def test_evaluation_learns_the_planted_fraud(data):
    result = run_evaluation(data, seed=0)
    report = result.report
    m, c = report["metrics"], report["counts"]
    assert set(m) == {"average_precision", "card_precision@100", "auc"}
    fraud_rate = c["test_frauds"] / c["test"]
    assert m["average_precision"] > max(0.3, 5 * fraud_rate) and m["auc"] > 0.75
    assert c["test"] + c["removed_known_compromised"] == c["test_window"] == result.scores.height
    assert report["windows"]["test_end"] == "2024-02-09" and len(report["feature_names"]) > 15
    same = evaluate_transactions(data, seed=0)
    assert same["metrics"] == m  # fixed seed: reproducible


def _app():
    app = typer.Typer()
    app.command()(evaluate)
    return app


def test_cli_json_and_scores(tmp_path, csv_file):
    scores = tmp_path / "scores.csv"
    res = CliRunner().invoke(_app(), ["--transactions", str(csv_file), "--json", "--scores-out", str(scores),
                                      "--top-k", "20"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert 0 < report["metrics"]["average_precision"] <= 1 and "card_precision@20" in report["metrics"]
    written = pl.read_csv(scores)
    assert written.columns == ["TRANSACTION_ID", "score"] and written.height == report["counts"]["test_window"]
    table = CliRunner().invoke(_app(), ["--transactions", str(csv_file), "--test-days", "5"])
    assert table.exit_code == 0 and "average_precision" in table.stdout


def test_cli_json_stays_valid_with_a_long_scores_path(tmp_path, csv_file):
    """The report is JSON for other programs: no line of it may be wrapped at the terminal's width."""
    folder = tmp_path / ("a_fairly_long_output_directory_name_for_the_scores_of_the_evaluation_run" * 2)
    folder.mkdir()
    scores = folder / "scores.csv"
    res = CliRunner().invoke(_app(), ["--transactions", str(csv_file), "--json", "--scores-out", str(scores)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["scores_out"] == str(scores)


def test_cli_bad_input_exits_2_naming_the_field(tmp_path, data):
    bad = tmp_path / "bad.csv"
    data.drop("TX_AMOUNT").write_csv(bad)
    res = CliRunner().invoke(_app(), ["--transactions", str(bad), "--json"])
    assert res.exit_code == 2 and "TX_AMOUNT" in res.output and len(res.output.strip().splitlines()) == 1
    short = CliRunner().invoke(_app(), ["--transactions", str(bad.with_name("none.csv"))])
    assert short.exit_code == 2 and "no such file" in short.output


def test_a_test_window_left_empty_by_known_compromised_cards_exits_2(tmp_path):
    """Valid data whose test window holds only cards with a fraud known before it: a ValueError and a
    traceback (exit 1) from the metrics of an empty test set."""
    rows, start = [], dt.datetime(2018, 4, 1)
    for day in range(21):
        for card in range(10):
            if day >= 14 and card != 0:  # in the test window only card 0, compromised on day 2, pays
                continue
            fraud = (card == 0 and day == 2) or (card == 1 and day == 3)
            rows.append({"TRANSACTION_ID": len(rows), "TX_DATETIME": start + dt.timedelta(days=day, hours=1 + card),
                         "CUSTOMER_ID": card, "TERMINAL_ID": 100 + card, "TX_AMOUNT": 10.0 + card,
                         "TX_FRAUD": int(fraud)})
    path = tmp_path / "tx.csv"
    pl.DataFrame(rows).write_csv(path)
    res = CliRunner().invoke(_app(), ["--transactions", str(path), "--json"])
    assert res.exit_code == 2 and "no transaction is left to test" in res.output, res.output
