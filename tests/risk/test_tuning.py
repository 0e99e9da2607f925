"""Threshold tuning: the suggested pair is the cheapest settable one, costs what it reports, never more
than the current pair, and tuning each event kind on its own never costs more than one shared pair."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from shopmind.risk.backtest import CostModel, _suggestions, by_thresholds, decision_cost, tune_thresholds
from shopmind.risk.engine import Thresholds

COST = CostModel()


def _applied(scores, fraud, amounts, best) -> float:
    assert 0.0 <= best["review"] <= best["block"] <= 1.0  # a pair `shopmind risk thresholds` accepts
    return decision_cost(by_thresholds(scores, best["review"], best["block"]), fraud, amounts, COST)


def _brute_force(scores, fraud, amounts, current, max_review_share=0.05) -> float:
    """The least cost over every settable pair: each distinct score, and 1.0, as either threshold."""
    candidates = sorted(set(scores.tolist()) | {1.0})
    costs = [decision_cost(by_thresholds(scores, *current), fraud, amounts, COST)]
    for review, block in itertools.combinations_with_replacement(candidates, 2):
        decisions = by_thresholds(scores, review, block)
        if (decisions == "review").mean() <= max_review_share:
            costs.append(decision_cost(decisions, fraud, amounts, COST))
    return min(costs)


def test_the_suggested_pair_costs_what_it_reports_when_scores_reach_1():
    """Good orders whose score is clipped at 1.0: no threshold (at most 1) lets them through, so "never
    block" must not be reported as (1.0, 1.0), which blocks them."""
    scores = np.array([0.0] * 188 + [1.0] * 4 + [0.6] * 8)
    fraud = np.array([False] * 192 + [True] * 8)
    amounts = np.array([10.0] * 188 + [1000.0] * 4 + [100.0] * 8)
    best = tune_thresholds(scores, fraud, amounts, COST, current=(0.5, 0.9))
    assert best["cost"] == pytest.approx(_applied(scores, fraud, amounts, best))
    assert best["cost"] <= decision_cost(by_thresholds(scores, 0.5, 0.9), fraud, amounts, COST)


def test_blocking_more_than_the_top_fifth_is_tried():
    """60 good payments below 40 frauds: blocking every fraud (40% of the events) costs nothing."""
    scores = np.r_[np.full(60, 0.1), np.linspace(0.41, 0.50, 40)]
    fraud = np.r_[np.zeros(60, bool), np.ones(40, bool)]
    amounts = np.full(100, 100.0)
    best = tune_thresholds(scores, fraud, amounts, COST, current=(0.5, 0.9))
    assert best["cost"] == 0.0 == _applied(scores, fraud, amounts, best)
    assert 0.1 < best["block"] <= 0.41


@pytest.mark.parametrize("seed", range(40))
def test_the_search_finds_the_cheapest_settable_pair(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    scores = np.round(rng.random(n), 1)  # ties, and (often) scores of exactly 0.0 and 1.0
    fraud = rng.random(n) < 0.3
    amounts = np.round(rng.lognormal(3, 1, n), 2)
    share = float(rng.choice([0.0, 0.05, 0.2, 1.0]))
    current = tuple(sorted(np.round(rng.random(2), 2)))
    best = tune_thresholds(scores, fraud, amounts, COST, current=current, max_review_share=share)
    assert best["cost"] == pytest.approx(_applied(scores, fraud, amounts, best))
    assert best["cost"] == pytest.approx(_brute_force(scores, fraud, amounts, current, share))
    if (best["review"], best["block"]) != current:  # a new pair keeps to the analysts' capacity
        assert (by_thresholds(scores, best["review"], best["block"]) == "review").mean() <= share
    assert best["cost"] <= decision_cost(by_thresholds(scores, *current), fraud, amounts, COST)


def test_tuning_each_kind_never_costs_more_than_one_shared_pair():
    """Orders: 950 good and 1 fraud at 0.0 (amount 10). Payments: 40 good at 0.0; at 0.5, 5 frauds of 100
    and 5 good payments of 1,000, best reviewed (80, against 500 allowed or 1,250 blocked). Reviewing
    them is 1% of all events but 20% of the payments: a search capped at 5% of the payments cannot,
    so the shared pair is a candidate for each kind."""
    s = np.r_[np.zeros(951), np.zeros(40), np.full(10, 0.5)]
    f = np.r_[np.zeros(950, bool), True, np.zeros(40, bool), np.ones(5, bool), np.zeros(5, bool)]
    a = np.r_[np.full(951, 10.0), np.full(40, 100.0), np.full(5, 100.0), np.full(5, 1000.0)]
    kinds = np.array(["order"] * 951 + ["payment"] * 50, dtype=object)
    d = np.array(["allow"] * len(s), dtype=object)
    ruled = np.zeros(len(s), bool)
    ruled[[0, 960]] = True  # a rule decided these two (allowed): their cost stays in every figure
    shared, per_kind = _suggestions(s, f, a, d, ruled, kinds, COST, Thresholds(0.9, 0.95))
    assert shared["cost"] == pytest.approx(10.0 + 80.0)  # the order fraud is let through
    assert set(per_kind) == {"order", "payment"}
    assert sum(v["cost"] for v in per_kind.values()) <= shared["cost"] + 1e-9
    # each kind alone, as reported, costs what its pair costs on its events
    for kind, best in per_kind.items():
        mine = kinds == kind
        decisions = np.where(ruled[mine], d[mine], by_thresholds(s[mine], best["review"], best["block"]))
        assert best["cost"] == pytest.approx(decision_cost(decisions, f[mine], a[mine], COST))


def test_tuning_a_large_backtest_is_fast():
    rng = np.random.default_rng(0)
    n = 1_000_000
    scores, fraud = rng.random(n), rng.random(n) < 0.01
    amounts = rng.lognormal(3, 1, n)
    started = time.perf_counter()
    best = tune_thresholds(scores, fraud, amounts, COST, current=(0.5, 0.9))
    assert time.perf_counter() - started < 10
    assert best["cost"] == pytest.approx(_applied(scores, fraud, amounts, best))
