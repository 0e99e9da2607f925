"""Training from the shop's own events: consented data -> models -> registry, behind a promotion gate.

`train_all` trains the trending-popularity fallback and the behaviour model. The behaviour model is a
challenger: it is promoted only if, on the newest events of a holdout of users, it scores at least as
well (NDCG@10) as the current champion does on the very same targets (`gate`). Erased users are not in
the data (erasure deleted their events), and the model's lineage lists exactly the pseudonyms it saw.

The holdout (`holdout_users`, at most HOLDOUT_USERS sequences) keeps its two newest events out of
training: the second-newest chooses the epoch and the blend, the newest judges the model. Everyone
else's events train the served model, newest included. The holdout is chosen by a hash of the
pseudonym, so it is stable from one training to the next: while the shop grows, old users only leave it
and only new ones join, so a champion never trained on the events that judge its challenger. When the
data shrinks (erasures, withdrawn consent) or pseudonyms are rotated, a few users whose newest event
the champion did train on can join it: that favours the champion, so the gate then errs towards
keeping it, never towards promoting a worse model.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from shopmind.evaluation import Sequences, Split, evaluate_ranking, leave_one_out
from shopmind.events.schemas import BEHAVIOUR_EVENT_TYPES
from shopmind.models.popularity import TrendingPopularity
from shopmind.models.text import available as text_available
from shopmind.recommend.behaviour import BehaviourRecommender
from shopmind.recommend.blend import attach_blend
from shopmind.training.registry import ANY_CHAMPION, replace_file

log = logging.getLogger(__name__)

# Sequences of at least 4 events keep 2 for training after leave-one-out. Below MIN_SEQUENCES of them there
# is nothing for a sequence model to learn, and trending popularity serves alone.
MIN_SEQUENCES = 20
HOLDOUT_USERS = 5000


def shop_sequences(events: pl.DataFrame) -> tuple[Sequences, list[str]]:
    """Item events per user (or per anonymous session) in time order, with each event's type and
    time as context; returns the sequences and the user pseudonyms among them (the lineage)."""
    usable = events.filter(pl.col("item_id").is_not_null() & pl.col("type").is_in(BEHAVIOUR_EVENT_TYPES))
    keyed = usable.with_columns(
        pl.when(pl.col("user_pseudonym").is_not_null()).then(pl.col("user_pseudonym"))
        .otherwise(pl.lit("s:") + pl.col("session_pseudonym")).alias("subject"))
    keyed = keyed.filter(pl.col("subject").is_not_null())
    seqs = Sequences.from_frame(keyed, user_col="subject", item_col="item_id", time_col="ts_ms", type_col="type")
    subjects = [u for u in seqs.user_ids if not u.startswith("s:")]
    return seqs, subjects


def with_catalog(seqs: Sequences, catalog_ids: Sequence[str]) -> Sequences:
    """The same sequences with every catalog item in the vocabulary, touched or not (new items are
    appended after the known ones, so existing indices do not move)."""
    known = set(seqs.item_ids)
    extra = [i for i in catalog_ids if i not in known]
    return Sequences(user_ids=seqs.user_ids, item_ids=list(seqs.item_ids) + extra, sequences=seqs.sequences,
                     context=seqs.context)


def private_sequences(seqs: Sequences, catalog_ids: Sequence[str]) -> Sequences:
    """What DP training reads: each known user's sequence (anonymous sessions left out: one person's
    sessions would be several examples, so clipping would bound a session, not a person) over a
    vocabulary that is the catalog in id order, without items outside it. The vocabulary ships with the
    model; built from the data, the order in which items first appear and which items appear at all
    would be facts about users that no noise covers."""
    vocab = sorted(set(catalog_ids))
    index = {item: n for n, item in enumerate(vocab)}
    remap = np.array([index.get(item, -1) for item in seqs.item_ids], dtype=np.int64)
    users, sequences, contexts = [], [], []
    for n, (user, seq) in enumerate(zip(seqs.user_ids, seqs.sequences)):
        if user.startswith("s:"):
            continue
        mapped = remap[seq]
        keep = mapped >= 0
        if not keep.any():
            continue
        users.append(user)
        sequences.append(mapped[keep])
        if seqs.context is not None:
            contexts.append(seqs.context[n][keep])
    return Sequences(user_ids=users, item_ids=vocab, sequences=sequences,
                     context=contexts if seqs.context is not None else None)


def content_vectors(cache_file, item_ids: Sequence[str], items: pl.DataFrame) -> np.ndarray:
    """Title embeddings for `item_ids`, computed once per distinct text and kept in `cache_file`."""
    import hashlib

    from shopmind.models.text import TitleEncoder, item_texts

    meta = {r["item_id"]: r for r in items.select("item_id", "title", "category").iter_rows(named=True)}
    texts = item_texts([(meta.get(i) or {}).get("title") or i for i in item_ids],
                       [(meta.get(i) or {}).get("category") for i in item_ids])
    keys = [hashlib.sha1(t.encode()).hexdigest() for t in texts]
    cached: dict[str, np.ndarray] = {}
    if cache_file.exists():
        try:
            frame = pl.read_parquet(cache_file)
            cached = dict(zip(frame["key"].to_list(), frame["vector"].to_numpy()))
        except (pl.exceptions.PolarsError, OSError, KeyError) as exc:
            # a cache: recomputed rather than stopping every training (one left damaged before its writes
            # were atomic made each later `shopmind train` fail, the schedule included)
            log.warning("title-vector cache unreadable (%s); recomputing it", type(exc).__name__)
    missing = sorted({k for k in keys if k not in cached})
    if missing:
        by_key = dict(zip(keys, texts))
        vectors = TitleEncoder().encode([by_key[k] for k in missing])
        cached.update(zip(missing, vectors))
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        # a file of its own, renamed into place: a training killed mid-write, or two writing at once, leave
        # the old file or a whole new one
        frame = pl.DataFrame({"key": list(cached), "vector": np.stack(list(cached.values()))})
        replace_file(cache_file, frame.write_parquet)
    return np.stack([np.asarray(cached[k], dtype=np.float32) for k in keys])


def remapped_scorer(model: Any, item_ids: Sequence[str]):
    """Score in another item index space (a champion trained on an older catalog). Items the model
    never saw score -inf; histories are translated item by item, unknown items dropped."""
    own = {item: n for n, item in enumerate(model.item_ids_)}
    to_own = np.array([own.get(i, -1) for i in item_ids], dtype=np.int64)
    known = to_own >= 0

    def score(histories, contexts=None):
        translated = [to_own[np.asarray(h, dtype=np.int64)] for h in histories]
        keep = [h >= 0 for h in translated]
        translated = [h[k] for h, k in zip(translated, keep)]
        if contexts is not None and getattr(model.score, "accepts_context", False):
            own_scores = model.score(translated, contexts=[c[k] for c, k in zip(contexts, keep)])
        else:
            own_scores = model.score(translated)
        out = np.full((len(histories), len(item_ids)), -np.inf)
        out[:, known] = own_scores[:, to_own[known]]
        return out

    score.accepts_context = True
    return score


@dataclass
class GateResult:
    promoted: bool
    challenger_ndcg: float
    champion_ndcg: float | None

    def as_dict(self) -> dict:
        return {"promoted": self.promoted, "challenger_ndcg@10": self.challenger_ndcg,
                "champion_ndcg@10": self.champion_ndcg}


def holdout_users(split: Split, n_users: int = HOLDOUT_USERS) -> np.ndarray:
    """The `n_users` evaluable sequences whose ids hash lowest (all when fewer): the same users from one
    training to the next, whatever else the data holds."""
    users = split.eval_users
    if len(users) <= n_users:
        return users
    keys = np.fromiter((int.from_bytes(hashlib.blake2b(split.data.user_ids[u].encode(), digest_size=8).digest(), "big")
                        for u in users), dtype=np.uint64, count=len(users))
    return np.sort(users[np.argsort(keys, kind="stable")[:n_users]])


def gate(challenger: Any, champion: Any | None, data: Sequences, tolerance: float = 0.0,
         split: Split | None = None) -> GateResult:
    """Promote when the challenger's test NDCG@10 >= champion's on the same targets, minus `tolerance`:
    the test targets of `split`'s gate users (the holdout), else of up to 5,000 sampled users."""
    split = split or leave_one_out(data)
    users = split.gate_users if split.gate_users is not None else split.selection(5000)
    ours = evaluate_ranking(challenger.score, split, "test", users=users)[0].ndcg
    if champion is None:
        return GateResult(True, ours, None)
    theirs = evaluate_ranking(remapped_scorer(champion, data.item_ids), split, "test", users=users)[0].ndcg
    return GateResult(ours >= theirs - tolerance, ours, theirs)


def _behaviour_inputs(shop, events: pl.DataFrame, dp: dict[str, Any] | None = None
                      ) -> tuple[Sequences, list[str], np.ndarray | None] | str:
    """The behaviour model's sequences, their subjects (lineage) and the catalog's title vectors; or why
    there is too little to train on."""
    seqs, subjects = shop_sequences(events)
    usable = sum(len(s) >= 4 for s in seqs.sequences)
    if usable < MIN_SEQUENCES:
        return f"{usable} sequences with 4+ item events; need {MIN_SEQUENCES}"
    content = None
    if dp is not None and dp.get("content_only") and not (shop.settings.item_text and text_available()):
        from shopmind.exceptions import InvalidInputError

        raise InvalidInputError("content_only needs item title embeddings: install the 'text' extra and keep "
                                "the item_text setting on", field="content_only")
    items = shop.items_frame()
    if dp is not None:
        seqs = private_sequences(seqs, items["item_id"].to_list())
        subjects = list(seqs.user_ids)
        usable = sum(len(s) >= 4 for s in seqs.sequences)  # known users' events on catalog items only
        if usable < MIN_SEQUENCES:
            return (f"{usable} known users' sequences with 4+ events on catalog items; need {MIN_SEQUENCES} "
                    "(DP training reads known users only, over the items feed's catalog: import the items)")
    if shop.settings.item_text and text_available():
        if dp is None:
            seqs = with_catalog(seqs, items["item_id"].to_list())
        content = content_vectors(shop.registry.root / "content_vectors.parquet", seqs.item_ids, items)
    return seqs, subjects, content


def _config_card(model) -> dict[str, Any]:
    return {**model.config_.__dict__, "learning_rate": model.learning_rate, "batch_size": model.batch_size}


def as_of_training_refused(shop) -> str | None:
    """Why no as-of behaviour model should be trained now, or None. Without a serving behaviour model,
    live decisions have no behaviour feature, so replays must not have one either; a shop that serves a
    DP model asked for the guarantee, and an as-of model trains without it."""
    loaded = shop.registry.load_current("behaviour")
    if loaded is None:
        return "no behaviour model serves (run `shopmind train` first)"
    if getattr(loaded[1], "privacy_", None) is not None:
        return "the serving behaviour model is differentially private; an as-of model would train without DP"
    return None


def train_behaviour_as_of(shop, until_ms: int, actor: str, time_budget_s: float | None = 60.0,
                          promote: bool = False) -> dict[str, Any]:
    """A behaviour model trained only on events before `until_ms`, for replays of later orders (the risk
    model's behaviour feature, risk/backtest.py AsOfUnusualness): registered, not promoted (it is not
    the shop's current model), and reached by erasure like every version; refused where
    `as_of_training_refused` says why. `promote` makes it the serving model instead (a benchmark's
    "today" that later events have not reached)."""
    from shopmind.exceptions import InvalidInputError

    refused = None if promote else as_of_training_refused(shop)
    if refused is not None:
        raise InvalidInputError(refused, field="behaviour_as_of")
    erasures_seen = shop.erasure.newest_receipt()
    events = shop.training_events("personalization").filter(pl.col("ts_ms") < until_ms)
    inputs = _behaviour_inputs(shop, events)
    if isinstance(inputs, str):
        raise InvalidInputError(f"too little history before that time to train a behaviour model: {inputs}",
                                field="until")
    seqs, subjects, content = inputs
    split = leave_one_out(seqs)
    started = time.perf_counter()
    model = BehaviourRecommender(time_budget_s=time_budget_s).fit(seqs, split, item_content=content)
    window = [int(events["ts_ms"].min()), int(events["ts_ms"].max())]
    version = shop.registry.register(
        "behaviour", model,
        card={"config": _config_card(model),
              "data_window_ms": window, "as_of_ms": int(until_ms), "n_interactions": seqs.n_interactions,
              "n_sequences": len(seqs.user_ids), "n_users": len(subjects), "n_items": seqs.n_items,
              "purpose": "personalization", "use": "serving" if promote else "risk replays of later events",
              "item_text": content is not None,
              "metrics": {"valid_ndcg@10": model.valid_ndcg_}, "blend": None, "privacy": None,
              "best_epoch": model.best_epoch_, "train_seconds": round(time.perf_counter() - started, 1),
              "trained_by": actor},
        subjects=subjects, promote=promote, erased_since=lambda: shop.erasure.erased_after(erasures_seen))
    return {"version": version, "data_window_ms": window, "as_of_ms": int(until_ms), "promoted": promote}


def train_all(shop, actor: str, time_budget_s: float | None = None, force_promote: bool = False,
              dp: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train trending popularity and the behaviour model on personalization-consented events.

    `dp` (e.g. {"epsilon": 8}) trains the behaviour model with user-level DP-SGD instead
    (privacy/dp_training.py); its guarantee goes into the model card. A private model replaces a
    non-private champion whatever the gate says (the shop asked for the guarantee); between private
    models the gate decides as usual."""
    erasures_seen = shop.erasure.newest_receipt()  # users erased after this (or being erased) may be read next
    events = shop.training_events("personalization")
    window = [int(events["ts_ms"].min()), int(events["ts_ms"].max())] if events.height else None
    result: dict[str, Any] = {}

    started = time.perf_counter()
    trending = TrendingPopularity().fit(events, shop.items_frame())
    users = events["user_pseudonym"].drop_nulls().unique().to_list()
    result["popularity"] = {"version": shop.registry.register(
        "popularity", trending,
        card={"config": {"half_life_days": trending.half_life_days}, "data_window_ms": window,
              "n_events": events.height, "n_users": len(users), "purpose": "personalization",
              "train_seconds": round(time.perf_counter() - started, 3), "trained_by": actor},
        subjects=users, erased_since=lambda: shop.erasure.erased_after(erasures_seen)), "promoted": True}

    if dp is not None:
        # A DP card keeps no data window, so replays date the model by its registration
        # (risk/backtest.py): it must not train on events dated after now (a client's clock ahead).
        events = events.filter(pl.col("ts_ms") <= int(time.time() * 1000))
    inputs = _behaviour_inputs(shop, events, dp)
    if isinstance(inputs, str):
        result["behaviour"] = {"skipped": inputs}
        return result
    seqs, subjects, content = inputs
    split = leave_one_out(seqs)
    split = split.with_holdout(holdout_users(split))
    started = time.perf_counter()
    if dp is not None:
        from shopmind.privacy import ledger
        from shopmind.privacy.dp_training import PrivateBehaviourRecommender

        from shopmind.exceptions import BudgetExceededError
        from shopmind.privacy.dp_training import one_example_per_user

        asked = dp.get("epsilon", 8.0)
        n_examples = len(one_example_per_user(split.train, dp.get("max_len", 50))[0])  # what fit will count
        asked_delta = dp.get("delta") or 1.0 / max(n_examples, 2)
        eps_left, delta_left = ledger.remaining(shop.store, shop.settings, ledger.TRAINING)
        # fail before hours of training; `spend` decides for good
        if asked > eps_left + ledger.TOLERANCE:
            raise BudgetExceededError(ledger.TRAINING, eps_left, asked)
        if asked_delta > delta_left + ledger.TOLERANCE:
            raise BudgetExceededError(ledger.TRAINING, delta_left, asked_delta, unit="delta")
        model = PrivateBehaviourRecommender(**dp).fit(seqs, item_content=content)
        # Recorded before the model is registered: a run that no longer fits the budget (another training
        # spent it meanwhile) is discarded unreleased. Each run adds its epsilon and delta (basic composition).
        privacy = model.privacy_
        spent = ledger.spend(shop.store, shop.settings, ledger.TRAINING, privacy["epsilon"], privacy["delta"],
                             {"model": "behaviour", "epochs": privacy["epochs"], "n_users": privacy["n_users"],
                              "noise_multiplier": round(privacy["noise_multiplier"], 6)}, actor)
        model.privacy_ = {**privacy, "ledger_purpose": ledger.TRAINING, "ledger_seq": spent.seq,
                          "training_epsilon_spent": round(spent.spent_epsilon, 6),
                          "training_delta_spent": spent.spent_delta}
    else:
        model = BehaviourRecommender(time_budget_s=time_budget_s).fit(seqs, split, item_content=content)
        # item kNN beside it, kept only when the validation targets rank better blended (recommend/blend.py)
        attach_blend(model, seqs, split)
    train_s = time.perf_counter() - started
    champion = shop.registry.load_current("behaviour")
    verdict = gate(model, champion[1] if champion else None, seqs, split=split)
    replaces_public = dp is not None and champion is not None and getattr(champion[1], "privacy_", None) is None
    promote = verdict.promoted or force_promote or replaces_public
    # A gated promotion holds only against the champion it was gated against: another training may
    # have promoted meanwhile (a schedule beside a manual run). Forced promotions replace whatever is current.
    expected = ANY_CHAMPION if force_promote else (champion[0] if champion else None)
    version = shop.registry.register(
        "behaviour", model,
        card={"config": _config_card(model),
              # exact counts and the first and last event's times are facts about single users: a DP
              # model's card keeps only what its guarantee covers or the catalog gives
              **({} if dp is not None else {"data_window_ms": window, "n_interactions": seqs.n_interactions}),
              "n_sequences": len(seqs.user_ids), "n_users": len(subjects),
              "n_items": seqs.n_items, "purpose": "personalization",
              "item_text": content is not None,
              # whose two newest events chose and judged the model; everyone else's trained it
              "holdout_users": len(split.gate_users),
              # the gate's verdict and why the version was put forward to serve (a forced or private model
              # is, whatever the gate said: the verdict, stored as "promoted", read false for a served DP
              # model); whether it serves is the registry's CURRENT, decided under its lock
              "metrics": {"valid_ndcg@10": model.valid_ndcg_, "challenger_ndcg@10": verdict.challenger_ndcg,
                          "champion_ndcg@10": verdict.champion_ndcg, "gate_promoted": verdict.promoted,
                          "put_forward_by": ("gate" if verdict.promoted else "force" if force_promote
                                             else "private model replaces a non-private one" if replaces_public
                                             else None)},
              "blend": None if getattr(model, "blend_", None) is None else {
                  "with": "item kNN" if dp is None else "item pairs, DP release", "rule": model.blend_.kind,
                  "weight": model.blend_.weight,
                  "valid_ndcg@10_by_rule_and_weight": model.blend_.valid_grid},
              "privacy": getattr(model, "privacy_", None),
              "best_epoch": model.best_epoch_, "train_seconds": round(train_s, 1), "trained_by": actor},
        subjects=subjects, promote=promote, if_current=expected,
        erased_since=lambda: shop.erasure.erased_after(erasures_seen))  # erased while it trained
    promoted = shop.registry.current_version("behaviour") == version  # force or DP may override the verdict
    result["behaviour"] = {"version": version, **verdict.as_dict(), "promoted": promoted}
    if promote and not promoted:
        result["behaviour"]["not_promoted"] = "another training promoted a model while this one was gated"
    return result
