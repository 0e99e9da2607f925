"""BehaviourRecommender: the behaviour model as a scikit-learn-like estimator.

    model = BehaviourRecommender().fit(sequences)            # or .fit(sequences, split=split)
    model.recommend_history([3, 17, 5], k=10)                # next items for any event sequence
    model.score(histories)                                   # (n, n_items) scores, for the evaluator

Hyperparameters live in __init__ unchanged; `fit` validates, derives the size-dependent ones by one
documented rule (`auto_config`), trains with early stopping on leave-one-out validation, and stores
fitted state in attributes ending in `_`.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence as Seq

import numpy as np
import torch

from shopmind.evaluation import Sequences, Split, evaluate_ranking, leave_one_out
from shopmind.exceptions import InvalidInputError, NotFittedError
from shopmind.models.behaviour import GAP_BUCKETS, BehaviourConfig, BehaviourModel, event_features
from shopmind.recommend.base import SequenceRecommender
from shopmind.recommend.serving_pass import newest_states


def auto_config(n_items: int, n_interactions: int, mean_length: float) -> dict:
    """The one rule that sizes the model from the data (no per-data-set tuning).

    Width grows with the number of interactions (more data supports more parameters); dropout is high
    for short, sparse histories, where the model otherwise memorises, and lower for long ones."""
    if n_interactions < 150_000:
        d_model = 64
    elif n_interactions < 1_000_000:
        d_model = 128
    else:
        d_model = 256
    dropout = 0.5 if mean_length < 20 else 0.2
    return {"d_model": d_model, "dropout": dropout}


def _windows(sequences: Seq[np.ndarray], max_len: int, step: int | None = None,
             contexts: Seq[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Left-padded (inputs, targets, input features) training windows; features (N, max_len, 4) are
    event_features() of each sequence's `contexts`, cut like the inputs (None without contexts).

    A history longer than a window is cut into windows that step back from its end by `step` events;
    each interaction is a target exactly once, in the window where it sees at least `max_len - step` earlier events (all of them near the start).

    Why not disjoint windows: the first targets of every window then saw almost no context. Why not a
    window per target (RecBole's every-prefix samples, step 1): it costs max_len times the compute of
    step max_len. On MovieLens-100K (histories of 106 events on average) step 25 gave HR@10 0.179,
    step 10 0.198, at 4x the time per epoch (docs/benchmarks.md); short histories have one window
    whatever the step."""
    step = max(1, min(step or max_len // 2, max_len))
    inputs, targets, features = [], [], []
    for n, seq in enumerate(sequences):
        seq = np.asarray(seq, dtype=np.int64) + 1  # shift: 0 is padding
        if len(seq) < 2:
            continue
        x_all, y_all = seq[:-1], seq[1:]
        # computed on the whole sequence, so a window's first event keeps its true gap to the one before
        f_all = event_features(contexts[n])[:-1].astype(np.int16) if contexts is not None else None
        end = len(x_all)
        covered = end  # targets at positions >= covered already belong to a later window
        while True:
            start = max(0, end - max_len)
            x = np.zeros(max_len, dtype=np.int64)
            y = np.zeros(max_len, dtype=np.int64)
            x[max_len - (end - start):] = x_all[start:end]
            keep = y_all[start:end].copy()
            first_own = 0 if start == 0 else min(max_len - step, end - start)  # too little context here
            keep[:first_own] = 0
            keep[covered - start:] = 0
            y[max_len - (end - start):] = keep
            inputs.append(x)
            targets.append(y)
            if f_all is not None:
                f = np.zeros((max_len, 4), dtype=np.int16)
                f[max_len - (end - start):] = f_all[start:end]
                features.append(f)
            covered = start + first_own
            if start == 0:
                break
            end -= step
    if not inputs:
        raise InvalidInputError("no sequence has two or more events: nothing to learn from", field="sequences")
    return np.stack(inputs), np.stack(targets), (np.stack(features) if contexts is not None else None)


def _pad_histories(histories: Seq[np.ndarray], max_len: int,
                   contexts: Seq[np.ndarray] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Left-padded to the longest history in the batch (at most max_len), at least one column; with
    `contexts`, their event_features() padded alike (B, width, 4)."""
    width = max(1, min(max_len, max((len(h) for h in histories), default=1)))
    out = np.zeros((len(histories), width), dtype=np.int64)
    feats = np.zeros((len(histories), width, 4), dtype=np.int64) if contexts is not None else None
    for r, h in enumerate(histories):
        h = np.asarray(h, dtype=np.int64)[-width:] + 1
        if len(h):
            out[r, width - len(h):] = h
            if feats is not None:
                if contexts[r] is None or len(contexts[r]) != len(histories[r]):
                    raise InvalidInputError("one context row per history event is required", field="contexts")
                feats[r, width - len(h):] = event_features(contexts[r])[-width:]
    return torch.from_numpy(out), (torch.from_numpy(feats) if feats is not None else None)


def _substitute_items(items: torch.Tensor, rate: float, n_items: int) -> torch.Tensor:
    """Training inputs with each real event's item replaced, with probability `rate`, by one drawn
    uniformly from the catalog (stochastic shared embeddings, Wu et al. 2019): a regulariser for short
    histories that a model otherwise memorises. Targets are untouched."""
    swap = (items != 0) & (torch.rand(items.shape) < rate)
    return torch.where(swap, torch.randint(1, n_items + 1, items.shape), items)


def _length_bucketed(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Random batches of similar length: shuffle, sort within pools of 50 batches by length, cut into
    batches, shuffle the batches. Each batch is then trimmed to its longest window, so short histories
    (most of them, in shop data) do not pay for 50 positions of padding."""
    order = rng.permutation(len(lengths))
    pool = batch_size * 50
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start:start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


class BehaviourRecommender(SequenceRecommender):
    """Next-item recommendations from a causal transformer over each user's sequence."""

    def __init__(self, max_len: int = 50, n_layers: int = 2, n_heads: int = 2, d_model: int | None = None,
                 dropout: float | None = None, learning_rate: float = 1e-3, batch_size: int = 128,
                 max_epochs: int = 200, patience: int = 5, n_negatives: int = 0, weight_decay: float = 0.0,
                 time_budget_s: float | None = None, valid_users: int = 5000, train_unused_valid: bool = True,
                 threads: int | None = None, window_step: int = 10, use_context: bool = True, seed: int = 0,
                 label_smoothing: float = 0.0, item_noise: float = 0.0, verbose: bool = False):
        self.max_len = max_len
        self.use_context = use_context
        self.window_step = window_step
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.d_model = d_model
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.n_negatives = n_negatives
        self.weight_decay = weight_decay
        self.time_budget_s = time_budget_s
        self.valid_users = valid_users
        self.train_unused_valid = train_unused_valid
        self.threads = threads
        self.seed = seed
        self.label_smoothing = label_smoothing
        self.item_noise = item_noise
        self.verbose = verbose

    # -- fitting -----------------------------------------------------------------------------------

    def fit(self, data: Sequences, split: Split | None = None,
            item_content: np.ndarray | None = None) -> "BehaviourRecommender":
        """Train on `split.fit_sequences()` with early stopping on validation targets; without a
        split, one is made from `data` by leave-one-out.

        Only `valid_users` users' validation targets choose the epoch (and, later, a blend's weight:
        `selection_users_`). With `train_unused_valid` (default) every other user's validation item is
        training data, as a shop would want of its newest events; off, no validation item is trained
        on (what RecBole's protocol does). Test targets are never trained on, except where `split` was
        made by `Split.with_holdout` (a shop's served model: only the holdout users' are kept out).
        `item_content` (n_items, dim), e.g. title embeddings, gives every item a content
        representation, including items no one has interacted with. When the data carries event
        context (types, times) and `use_context` is on, the model reads it."""
        if not isinstance(data, Sequences):
            raise InvalidInputError("fit expects shopmind.evaluation.Sequences", field="data")
        if self.max_len < 2 or self.batch_size < 1 or self.max_epochs < 1 or not 1 <= self.window_step <= self.max_len:
            raise InvalidInputError("max_len >= 2, batch_size >= 1, max_epochs >= 1 and 1 <= window_step <= max_len "
                                    "are required", field="params")
        split = split or leave_one_out(data)
        if not self.train_unused_valid:  # every validation (and test) item held out, whatever the split says
            split = split.with_selection(None)
        elif split.selection_users is None:
            split = split.reserve(self.valid_users, self.seed)
        selection = split.selection(self.valid_users, self.seed)
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        if self.threads:
            torch.set_num_threads(self.threads)
        lengths = [len(s) for s in data.sequences]
        auto = auto_config(data.n_items, data.n_interactions, float(np.mean(lengths)))
        if item_content is not None and item_content.shape[0] != data.n_items:
            raise InvalidInputError(f"item_content has {item_content.shape[0]} rows for {data.n_items} items",
                                    field="item_content")
        config = BehaviourConfig(
            n_items=data.n_items, max_len=self.max_len, n_layers=self.n_layers, n_heads=self.n_heads,
            d_model=self.d_model or auto["d_model"],
            dropout=self.dropout if self.dropout is not None else auto["dropout"],
            content_dim=0 if item_content is None else int(item_content.shape[1]),
            n_time_buckets=GAP_BUCKETS if self.use_context and data.context is not None else 0,
            calendar=bool(self.use_context and data.context is not None))
        model = BehaviourModel(config)
        if item_content is not None:
            model.trunk.set_content(torch.from_numpy(np.asarray(item_content, dtype=np.float32)))
        optimizer = torch.optim.AdamW(model.parameters(), lr=self.learning_rate, betas=(0.9, 0.98),
                                      weight_decay=self.weight_decay)
        contexts = split.fit_context() if config.calendar else None
        x_all, y_all, f_all = _windows(split.fit_sequences(), self.max_len, self.window_step, contexts)
        window_lengths = (x_all != 0).sum(axis=1)
        x_all, y_all = torch.from_numpy(x_all), torch.from_numpy(y_all)
        f_all = torch.from_numpy(f_all) if f_all is not None else None
        self.model_ = model
        self.config_ = config
        self.item_ids_ = list(data.item_ids)
        self.blend_ = None  # recommend/blend.py attach_blend may attach one after fitting
        self.selection_users_ = selection  # not saved: only a blend chosen right after fitting reads it
        started = time.perf_counter()
        best, best_state, best_epoch, waited = -1.0, None, 0, 0
        self.history_ = []
        for epoch in range(1, self.max_epochs + 1):
            model.train()
            total, batches = 0.0, 0
            for idx in _length_bucketed(window_lengths, self.batch_size, rng):
                width = int(window_lengths[idx].max())
                idx = torch.from_numpy(idx)
                context = f_all[idx, -width:].long() if f_all is not None else None
                inputs = x_all[idx, -width:]
                if self.item_noise > 0:
                    inputs = _substitute_items(inputs, self.item_noise, data.n_items)
                loss = model.next_item_loss(inputs, y_all[idx, -width:], context,
                                            n_negatives=self.n_negatives,
                                            label_smoothing=self.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                total += loss.detach().item()
                batches += 1
            report = evaluate_ranking(self.score, split, "valid", users=selection)[0]
            elapsed = time.perf_counter() - started
            self.history_.append({"epoch": epoch, "loss": total / max(batches, 1), "valid_ndcg@10": report.ndcg,
                                  "valid_hr@10": report.hr, "seconds": round(elapsed, 1)})
            if self.verbose:
                print(json.dumps(self.history_[-1]), flush=True)
            if report.ndcg > best:
                best, best_epoch, waited = report.ndcg, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                waited += 1
            if waited >= self.patience or (self.time_budget_s and elapsed > self.time_budget_s):
                break
        model.load_state_dict(best_state)
        model.eval()
        if item_content is not None:
            self._prepare_cold_items(model, split)
        self.best_epoch_ = best_epoch
        self.valid_ndcg_ = best
        self.train_seconds_ = time.perf_counter() - started
        return self

    @staticmethod
    @torch.no_grad()
    def _prepare_cold_items(model: BehaviourModel, split: Split) -> None:
        """Catalog items that no sequence holds (nobody has touched them yet) only ever acted as
        negatives, which pushed their id vectors and biases down. Serve them by content alone: zero id
        vector, the median bias of the others. An item held only in held-out positions (some user's
        validation or test item) is not one of them: in a benchmark, whose catalog is the data's items,
        every such item is a held-out target, and lifting it would tell the model where the targets are."""
        if not model.config.tied_output:
            return
        seen = np.zeros(model.config.n_items, dtype=bool)
        for seq in split.data.sequences:
            seen[seq] = True
        if seen.all():
            return
        cold = torch.from_numpy(np.flatnonzero(~seen) + 1)
        model.trunk.item_emb.weight[cold] = 0.0
        bias = model.heads["next_item"].bias
        bias[cold] = bias[torch.from_numpy(np.flatnonzero(seen) + 1)].median()

    def _check(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError("BehaviourRecommender is not fitted: call fit(sequences) first")

    # -- inference ---------------------------------------------------------------------------------

    @property
    def reads_context(self) -> bool:
        """Whether the fitted model reads event context (it was trained on data that carried it)."""
        return bool(self.config_.calendar)

    def _inputs(self, histories, contexts) -> tuple[torch.Tensor, torch.Tensor | None]:
        self._check()
        if self.model_.training:  # eval() walks every module: only pay for it when the mode changes
            self.model_.eval()
        return _pad_histories(histories, self.max_len, contexts if self.reads_context else None)

    @torch.no_grad()
    def score(self, histories: Seq[np.ndarray], contexts: Seq[np.ndarray] | None = None,
              blended: bool = True) -> np.ndarray:
        """Scores over all items (n, n_items) for each history of item indices (time-ordered), with
        each history's [type code, unix seconds] rows if the model reads context (else ignored; a
        context model given none scores from the items alone). With a blend attached
        (recommend/blend.py, `attach_blend`), the blend's scores unless `blended=False`."""
        inputs = self._inputs(histories, contexts)  # first: it checks the model is fitted
        scores = self.model_.next_item_scores(*inputs).numpy()
        item_blend = getattr(self, "blend_", None)
        return item_blend.apply(scores, histories) if (blended and item_blend is not None) else scores

    score.accepts_context = True  # the evaluator hands over contexts (evaluation/protocol.py)

    @torch.inference_mode()
    def user_state(self, histories: Seq[np.ndarray], contexts: Seq[np.ndarray] | None = None,
                   traced: bool = True) -> np.ndarray:
        """The trunk's state after each history (n, d): what serving caches per user. Scores are
        `[state, 1] @ item_vectors().T`, so serving needs no torch beyond this call. `traced`: through
        one TorchScript call (recommend/serving_pass.py) instead of the eager pass; same states."""
        inputs = self._inputs(histories, contexts)
        if traced:
            return newest_states(self.model_, *inputs).numpy()
        return self.model_.last_hidden(*inputs).numpy()

    def item_vectors(self) -> np.ndarray:
        """Item vectors and biases as one (n_items, d + 1) matrix: score = [state, 1] @ vectors.T."""
        self._check()
        with torch.no_grad():
            vectors, bias = self.model_.heads["next_item"].output_vectors()
            return torch.cat([vectors[1:], bias[1:, None]], dim=1).numpy()

    def _similarity_vectors(self) -> np.ndarray:
        return self.item_vectors()[:, :-1]

    # -- persistence -------------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        self._check()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        torch.save(self.model_.state_dict(), path / "weights.pt")
        params = {k: v for k, v in self.__dict__.items() if not k.endswith("_")}
        (path / "model.json").write_text(json.dumps({
            "params": params, "config": asdict(self.config_), "item_ids": self.item_ids_,
            "best_epoch": self.best_epoch_, "valid_ndcg": self.valid_ndcg_, "train_seconds": self.train_seconds_,
            "history": self.history_}))
        if getattr(self, "blend_", None) is not None:
            self.blend_.save(path / "blend")

    @classmethod
    def load(cls, path: Path) -> "BehaviourRecommender":
        if cls is BehaviourRecommender and "privacy" in json.loads((Path(path) / "model.json").read_text()):
            from shopmind.privacy.dp_training import PrivateBehaviourRecommender  # trained with DP-SGD

            return PrivateBehaviourRecommender.load(path)
        return cls._load_weights(path)

    @classmethod
    def _load_weights(cls, path: Path) -> "BehaviourRecommender":
        path = Path(path)
        meta = json.loads((path / "model.json").read_text())
        est = cls(**meta["params"])
        est.config_ = BehaviourConfig(**meta["config"])
        est.model_ = BehaviourModel(est.config_)
        state = torch.load(path / "weights.pt", weights_only=True)
        # Models saved before the head stopped registering the trunk carry a second copy of it.
        state = {k: v for k, v in state.items() if not k.startswith("heads.next_item.trunk.")}
        est.model_.load_state_dict(state)
        est.model_.eval()
        est.item_ids_ = meta["item_ids"]
        est.best_epoch_, est.valid_ndcg_ = meta["best_epoch"], meta["valid_ndcg"]
        est.train_seconds_, est.history_ = meta["train_seconds"], meta["history"]
        est.blend_ = None
        if (path / "blend").exists():
            from shopmind.recommend.blend import ItemBlend

            est.blend_ = ItemBlend.load(path / "blend")
        return est
