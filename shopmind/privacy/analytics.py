"""Differentially private aggregate reports: the one path by which counts, sums, means and histograms of
the shop's events leave shopmind for dashboards and advertisers.

    query = ReportQuery(metric="sum", by="category", value="price", bounds=(0, 200), types=("purchase",),
                        epsilon=1.0, purpose="advertising")
    report = release(frame, query)             # frame: events with user_pseudonym, ts_ms, group and value columns

A release has three steps (docs/privacy.md, "Differentially private analytics"):

1. Contribution bounding. The unit of privacy is a user. Each user keeps at most `max_groups` (L) groups
   and at most `max_rows_per_group` (C) rows in each; values are clamped to the declared `bounds`. Which
   groups and rows are kept is decided by a keyed hash of the user's own pseudonym, group and position
   among their own rows, with a fresh key per release (from `secrets`). The choice therefore depends only
   on that user's data: removing another user changes nothing about what this user contributes, so
   adding or removing one user changes at most L groups, each by at most C rows (one user each).
2. Noisy threshold (OpenDP `make_laplace_threshold`, Rogers 2023). The groups come from the data (their
   domain is unknown), so releasing a group's name is itself a leak. Each group's bounded count of
   distinct users gets discrete Laplace noise; only groups whose noisy user count reaches the threshold
   tau = k + ceil(scale * ln(1/beta)) are kept, with k = 50: a group of fewer than k users gets through
   with probability below beta = 1e-6. This step spends epsilon (half the query's, all of it for
   `users`-only histograms) and a small delta, computed by OpenDP's privacy map.
3. Noise on the statistics of the released groups (OpenDP `make_laplace`, or `make_gaussian` converted
   from zCDP to (epsilon, delta)), calibrated to the sensitivity left by step 1.

Everything returned is a function of the OpenDP outputs alone (post-processing). Noise never comes from
numpy or `random`.
"""

from __future__ import annotations

import functools
import math
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import polars as pl

from shopmind.events.schemas import EventType
from shopmind.exceptions import InvalidInputError

METRICS = ("count", "sum", "mean", "histogram")
GROUP_BY = ("category", "type", "day", "country", "age_band", "segment")
VALUE_COLUMNS = ("price", "quantity", "rating")
NOISES = ("laplace", "gaussian")
MIN_USERS = 50          # k: no group with fewer users is released (except with probability < LEAK)
LEAK = 1e-6             # beta: chance that a group of k - 1 users passes the noisy threshold
GAUSSIAN_DELTA = 1e-8   # delta of the Gaussian mechanism's conversion from zCDP
ALL = "all"             # the one group of a report without `by`
USER = "user_pseudonym"


def _dp():
    import opendp.prelude as dp

    dp.enable_features("contrib")  # the threshold and noise measurements are in OpenDP's contrib set
    return dp


@dataclass(frozen=True)
class ReportQuery:
    """What to release. `bounds` are required for sum, mean and histogram (they clamp `value`)."""

    metric: str
    epsilon: float
    purpose: str = "analytics"
    by: str | None = None
    value: str | None = None
    bounds: tuple[float, float] | None = None
    bins: int = 10                          # histogram: equal-width bins between the bounds
    types: tuple[str, ...] = ()             # only these event types (all when empty)
    max_groups: int = 4                     # L: groups a user may contribute to
    max_rows_per_group: int = 1             # C: rows a user may contribute to one group
    noise: str = "laplace"

    def checked(self) -> "ReportQuery":
        """The query if it is well formed; InvalidInputError naming the field otherwise."""
        def bad(name: str, message: str) -> InvalidInputError:
            return InvalidInputError(f"{name}: {message}", field=name)

        if self.metric not in METRICS:
            raise bad("metric", f"must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if self.by is not None and self.by not in GROUP_BY:
            raise bad("by", f"must be one of {', '.join(GROUP_BY)}, got {self.by!r}")
        if self.noise not in NOISES:
            raise bad("noise", f"must be laplace or gaussian, got {self.noise!r}")
        if not (isinstance(self.epsilon, (int, float)) and 0 < self.epsilon <= 10 and math.isfinite(self.epsilon)):
            raise bad("epsilon", "must be a number in (0, 10]")
        if not 1 <= self.max_groups <= 1000:
            raise bad("max_groups", "must be between 1 and 1000")
        if not 1 <= self.max_rows_per_group <= 1000:
            raise bad("max_rows_per_group", "must be between 1 and 1000")
        unknown = sorted(set(self.types) - {t.value for t in EventType})
        if unknown:  # a misspelt type would select nothing, and the empty report would still spend epsilon
            raise bad("types", f"unknown event type(s) {', '.join(unknown)}; known: "
                               f"{', '.join(t.value for t in EventType)}")
        if self.metric == "count":
            if self.value is not None or self.bounds is not None:
                raise bad("value", "count takes no value column or bounds")
            return self
        if self.value not in VALUE_COLUMNS:
            raise bad("value", f"{self.metric} needs a value column: one of {', '.join(VALUE_COLUMNS)}")
        if self.bounds is None or len(self.bounds) != 2:
            raise bad("bounds", f"{self.metric} needs bounds (lower, upper) to clamp {self.value}")
        lo, hi = self.bounds
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise bad("bounds", "must be finite with lower < upper")
        if self.metric == "histogram" and not 1 <= self.bins <= 100:
            raise bad("bins", "must be between 1 and 100")
        return self

    def describe(self) -> dict[str, Any]:
        """For the ledger: the query's shape only (no data, no user)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


@dataclass
class Report:
    """Released rows and what the release spent. `rows`: group (and bin for histograms), value, users
    (the noisy distinct-user count from the threshold step)."""

    query: ReportQuery
    rows: list[dict[str, Any]]
    epsilon: float
    delta: float
    threshold: int
    noise_scales: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"query": self.query.describe(), "rows": self.rows, "epsilon": self.epsilon, "delta": self.delta,
                "threshold": self.threshold, "min_users": MIN_USERS, "noise_scales": self.noise_scales}


# -- inputs --------------------------------------------------------------------------------------------


def group_column(events: pl.DataFrame, by: str | None, items: pl.DataFrame | None = None,
                 users: pl.DataFrame | None = None) -> pl.DataFrame:
    """`events` with a `group` column for `by`: the top level of the item's "A > B" category, the event
    type, the UTC day, or a profile field of the user (`segment` is the `segment` key of its attributes)."""
    if by is None:
        return events.with_columns(group=pl.lit(ALL))
    if by == "type":
        return events.with_columns(group=pl.col("type"))
    if by == "day":
        return events.with_columns(group=pl.from_epoch("ts_ms", time_unit="ms").dt.strftime("%Y-%m-%d"))
    if by == "category":
        assert items is not None, "grouping by category needs the items frame"
        top = items.select("item_id", group=pl.col("category").str.split(">").list.first().str.strip_chars())
        return events.join(top.filter(pl.col("group") != ""), on="item_id", how="left")
    assert users is not None, f"grouping by {by} needs the users frame"
    column = pl.col("attributes").str.json_path_match("$.segment") if by == "segment" else pl.col(by)
    profile = users.select(pl.col("pseudonym").alias(USER), column.alias("group"))
    return events.join(profile, on=USER, how="left")


# -- step 1: contribution bounding ---------------------------------------------------------------------


def bound_contributions(frame: pl.DataFrame, max_groups: int, max_rows: int, salt: int | None = None) -> pl.DataFrame:
    """Keep at most `max_groups` groups per user and `max_rows` rows per user and group (see module doc).

    Rows are numbered within their user by time (a stable sort keeps the user's own order for ties), and
    groups and rows are ranked by a hash keyed with `salt`, so what a user keeps depends on their rows only.
    """
    salt = secrets.randbits(64) if salt is None else salt
    frame = frame.sort([USER, "ts_ms"], maintain_order=True).with_columns(
        _n=pl.int_range(pl.len()).over(USER))
    frame = frame.with_columns(_gh=pl.struct(USER, "group").hash(seed=salt),
                               _rh=pl.struct(USER, "_n").hash(seed=salt))
    groups = (frame.select(USER, "group", "_gh").unique(subset=[USER, "group"], maintain_order=True)
              .filter(pl.col("_gh").rank("ordinal").over(USER) <= max_groups))
    kept = frame.join(groups.select(USER, "group"), on=[USER, "group"], how="semi")
    kept = kept.filter(pl.col("_rh").rank("ordinal").over([USER, "group"]) <= max_rows)
    return kept.drop("_n", "_gh", "_rh")


# -- steps 2 and 3: OpenDP measurements ----------------------------------------------------------------


def _smallest_scale(make: Callable[[float], Any], d_in: Any, epsilon: float) -> float:
    """The least noise scale whose OpenDP privacy map gives at most `epsilon` for `d_in`."""
    dp = _dp()

    def enough(scale: float) -> bool:
        try:
            spent = make(scale).map(d_in)
        except dp.OpenDPException:  # a scale so small the map overflows spends too much
            return False
        return (spent[0] if isinstance(spent, tuple) else spent) <= epsilon

    try:
        return dp.binary_search(enough, bounds=(1e-6, 1e9))
    except ValueError:  # no scale up to 1e9 is enough: an epsilon of about 1e-9 or less
        raise InvalidInputError(f"epsilon {epsilon:g} is too small: the noise it needs is beyond what a "
                                "release can carry; use a larger epsilon", field="epsilon") from None


def threshold_for(scale: float) -> int:
    """tau: a group of MIN_USERS - 1 users passes only if its noise exceeds scale * ln(1/LEAK), which
    discrete Laplace noise does with probability below LEAK."""
    return MIN_USERS + math.ceil(scale * math.log(1 / LEAK))


@functools.lru_cache(maxsize=256)  # measurements are immutable; calibration is a binary search
def threshold_measurement(max_groups: int, epsilon: float):
    """OpenDP's noisy threshold over {group: distinct users}, calibrated to `epsilon`. A user changes at
    most `max_groups` groups by one each: d_in = (L0, L1, Linf) = (L, L, 1)."""
    dp = _dp()
    domain = dp.map_domain(dp.atom_domain(T=str), dp.atom_domain(T="i64"))
    metric = dp.l01inf_distance(dp.absolute_distance(T="i64"))
    d_in = (max_groups, max_groups, 1)

    def make(scale: float):
        return dp.m.make_laplace_threshold(domain, metric, scale=scale, threshold=threshold_for(scale))

    scale = _smallest_scale(make, d_in, epsilon)
    return make(scale), d_in, scale


@functools.lru_cache(maxsize=256)
def noise_measurement(noise: str, integer: bool, l1: float, l2: float, epsilon: float):
    """Laplace (pure epsilon, L1 sensitivity) or Gaussian (zCDP -> (epsilon, GAUSSIAN_DELTA), L2
    sensitivity) noise on a vector of per-group statistics."""
    dp = _dp()
    atom = dp.atom_domain(T="i64") if integer else dp.atom_domain(T=float, nan=False)
    domain = dp.vector_domain(atom)
    if noise == "laplace":
        d_in = int(l1) if integer else float(l1)

        def make(scale: float):
            return dp.m.make_laplace(domain, dp.l1_distance(T="i64" if integer else float), scale=scale)
    else:
        d_in = float(l2)

        def make(scale: float):
            gauss = dp.m.make_gaussian(domain, dp.l2_distance(T=float), scale=scale)
            return dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(gauss), GAUSSIAN_DELTA)

    scale = _smallest_scale(make, d_in, epsilon)
    return make(scale), d_in, scale


def _spent(measurement, d_in) -> tuple[float, float]:
    out = measurement.map(d_in)
    return (float(out[0]), float(out[1])) if isinstance(out, tuple) else (float(out), 0.0)


# -- the release ---------------------------------------------------------------------------------------


def prepare(frame: pl.DataFrame, query: ReportQuery) -> pl.DataFrame:
    """Rows that can take part: of a known user (anonymous events cannot be bounded per person), of the
    selected types, in a group, with a value (clamped) where the metric needs one."""
    frame = frame.filter(pl.col(USER).is_not_null() & pl.col("group").is_not_null())
    if query.types:
        frame = frame.filter(pl.col("type").is_in(list(query.types)))
    if query.metric == "count":
        return frame.with_columns(_v=pl.lit(1.0))
    lo, hi = query.bounds
    frame = frame.filter(pl.col(query.value).is_not_null()).with_columns(
        _v=pl.col(query.value).cast(pl.Float64).clip(lo, hi))
    if query.metric == "histogram":  # the bin becomes part of the group: a user is bounded across (group, bin)
        width = (hi - lo) / query.bins
        index = ((pl.col("_v") - lo) / width).floor().cast(pl.Int64).clip(0, query.bins - 1)
        frame = frame.with_columns(group=pl.concat_str(pl.col("group"), pl.lit("\x1f"), index.cast(pl.Utf8)))
    return frame


def release(frame: pl.DataFrame, query: ReportQuery, salt: int | None = None) -> Report:
    """Release `query` over `frame` (columns user_pseudonym, ts_ms, type, group and the value column)."""
    query = query.checked()
    kept = bound_contributions(prepare(frame, query), query.max_groups, query.max_rows_per_group, salt)
    return publish(aggregate(kept, query), query)


def aggregate(kept: pl.DataFrame, query: ReportQuery) -> pl.DataFrame:
    """Per group of bounded rows: distinct users, rows, sum of values, sum of values minus the middle."""
    mid = 0.0 if query.bounds is None else (query.bounds[0] + query.bounds[1]) / 2
    return kept.group_by("group").agg(users=pl.col(USER).n_unique(), rows=pl.len(),
                                      total=pl.col("_v").sum(), centred=(pl.col("_v") - mid).sum())


def publish(stats: pl.DataFrame, query: ReportQuery) -> Report:
    """Steps 2 and 3 on the output of `aggregate`: the only part that sees data and draws noise."""
    L, C = query.max_groups, query.max_rows_per_group
    mid = 0.0 if query.bounds is None else (query.bounds[0] + query.bounds[1]) / 2

    # Step 2: which groups are released, and their noisy user counts.
    value_epsilon = query.epsilon / 2
    thresh, t_in, t_scale = threshold_measurement(L, query.epsilon - value_epsilon)
    released = thresh(dict(zip(stats["group"].to_list(), stats["users"].to_list())))
    epsilon, delta = _spent(thresh, t_in)
    keys = sorted(released)
    chosen = stats.filter(pl.col("group").is_in(keys)).sort("group")
    scales = {"threshold": t_scale}

    # Step 3: noise on the released groups' statistics. One user moves each of at most L groups by at most
    # C rows, C * max|value| in a sum, C * (upper - lower) / 2 in a sum centred on the middle of the bounds.
    def noisy(column: str, integer: bool, per_group: float, eps: float) -> list:
        nonlocal epsilon, delta
        meas, d_in, scale = noise_measurement(query.noise, integer, L * per_group, math.sqrt(L) * per_group, eps)
        values = chosen[column].to_list()
        out = meas(values) if values else []
        e, d = _spent(meas, d_in)
        epsilon, delta = epsilon + e, delta + d
        scales[column] = scale
        return out

    if query.metric in ("count", "histogram"):
        values = noisy("rows", True, C, value_epsilon)
    elif query.metric == "sum":
        lo, hi = query.bounds
        values = noisy("total", False, C * max(abs(lo), abs(hi)), value_epsilon)
    else:  # mean = middle + noisy centred sum / noisy row count, each with half of the value epsilon
        lo, hi = query.bounds
        counts = noisy("rows", True, C, value_epsilon / 2)
        sums = noisy("centred", False, C * (hi - lo) / 2, value_epsilon / 2)
        values = [min(max(mid + s / max(n, 1), lo), hi) for s, n in zip(sums, counts)]

    rows = []
    for key, value in zip(keys, values):
        row: dict[str, Any] = {"group": key, "value": value, "users": int(released[key])}
        if query.metric == "histogram":
            key, index = key.rsplit("\x1f", 1)  # the bin is last; a group name may hold the separator too
            lo, hi = query.bounds
            width = (hi - lo) / query.bins
            row.update(group=key, bin=[lo + int(index) * width, lo + (int(index) + 1) * width])
        if query.metric in ("count", "histogram"):
            row["value"] = max(int(value), 0)
        rows.append(row)
    return Report(query, rows, epsilon, delta, threshold_for(t_scale), scales)


def run_report(store, settings, query: ReportQuery, actor: str) -> Report:
    """Read the purpose's consented events, release the query, and record it in the privacy ledger. The
    ledger's budget check and its row are one transaction; if the budget is short, BudgetExceededError is
    raised and the computed report is discarded unseen (an unreleased output costs no privacy)."""
    from sqlalchemy import select

    from shopmind.privacy import consent, ledger
    from shopmind.storage import schema

    query = query.checked()
    ledger.check_purpose(query.purpose, ledger.REPORT_PURPOSES)
    eps_left, _ = ledger.remaining(store, settings, query.purpose)
    if query.epsilon > eps_left + ledger.TOLERANCE:  # fail fast; `spend` decides for good
        from shopmind.exceptions import BudgetExceededError

        raise BudgetExceededError(query.purpose, eps_left, query.epsilon)
    columns = [USER, "type", "item_id", "ts_ms"] + ([query.value] if query.value else [])
    events = consent.consented_events(store, query.purpose, settings.default_consent, columns=columns)
    items = users = None
    if query.by == "category":
        i = schema.items
        items = store.frame(select(i.c.item_id, i.c.category), schema_overrides={"item_id": pl.Utf8, "category": pl.Utf8})
    elif query.by in ("country", "age_band", "segment"):
        u = schema.users
        users = store.frame(select(u.c.pseudonym, u.c.country, u.c.age_band, u.c.attributes),
                            schema_overrides={c: pl.Utf8 for c in ("pseudonym", "country", "age_band", "attributes")})
    report = release(group_column(events, query.by, items, users), query)
    ledger.spend(store, settings, query.purpose, report.epsilon, report.delta, query.describe(), actor)
    return report


__all__ = ["MIN_USERS", "Report", "ReportQuery", "bound_contributions", "group_column", "publish", "release", "run_report"]
