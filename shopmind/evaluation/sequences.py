"""Per-user item sequences and the leave-one-out split.

Items are dense integer ids 0..n_items-1 (the raw ids are kept in `item_ids`). A sequence is in time
order. The split follows SASRec and RecBole's `LS: valid_and_test`: for every user with at least three
interactions the last item is the test target, the second last the validation target, the rest train;
users with fewer than three interactions only contribute training data.

Sequences may carry each event's context beside its item: an event type code (`EVENT_TYPES`) and a
timestamp in seconds. Context describes the events a model reads, never a target before it is
predicted: a history's context is cut exactly where its items are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shopmind.exceptions import InvalidInputError


# Event type codes shared by every data source; 0 means unknown. Shop events use their own names,
# public data sets map theirs (Taobao's pv/cart/fav/buy) onto these.
EVENT_TYPES = {"view": 1, "click": 2, "add_to_cart": 3, "purchase": 4, "rating": 5, "ad_click": 6, "favourite": 7,
               "search": 8}


@dataclass
class Sequences:
    user_ids: list[str]
    item_ids: list[str]
    sequences: list[np.ndarray]  # int64 arrays of item indices, time-ordered
    # Optional, aligned with `sequences`: int64 arrays (len, 2) of [event type code, unix seconds]
    # (0 where unknown). None when the source has item ids only.
    context: list[np.ndarray] | None = None

    def __post_init__(self) -> None:
        if self.context is not None and (len(self.context) != len(self.sequences) or any(
                c.shape != (len(s), 2) for c, s in zip(self.context, self.sequences))):
            raise InvalidInputError("context must hold one [type, seconds] row per event of every sequence",
                                    field="context")

    def subset(self, rows) -> "Sequences":
        """The same catalog with only the sequences (and their context) at `rows`."""
        return Sequences(user_ids=[self.user_ids[r] for r in rows], item_ids=self.item_ids,
                         sequences=[self.sequences[r] for r in rows],
                         context=None if self.context is None else [self.context[r] for r in rows])

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    @classmethod
    def from_lists(cls, users: list[str], lists: list[list[str]],
                   contexts: list[list[tuple[int, int]]] | None = None) -> "Sequences":
        """`contexts`, if given: per sequence, one (event type code, unix seconds) per item."""
        vocab: dict[str, int] = {}
        seqs = []
        for items in lists:
            seqs.append(np.fromiter((vocab.setdefault(i, len(vocab)) for i in items), dtype=np.int64, count=len(items)))
        context = None
        if contexts is not None:
            context = [np.asarray(c, dtype=np.int64).reshape(len(c), 2) for c in contexts]
        return cls(user_ids=list(users), item_ids=list(vocab), sequences=seqs, context=context)

    @classmethod
    def from_frame(cls, frame, user_col: str = "user", item_col: str = "item", time_col: str | None = "ts_ms",
                   type_col: str | None = None):
        """From a Polars frame of interactions (sorted by time within each user). With `time_col` in
        milliseconds and/or `type_col` (names of EVENT_TYPES), the sequences carry their context."""
        import polars as pl

        ordered = frame.sort([user_col, time_col], maintain_order=True) if time_col else frame  # ties keep their order
        columns = [pl.col(item_col)]
        if time_col:
            columns.append((pl.col(time_col) // 1000).alias("_seconds"))
        if type_col:
            columns.append(pl.col(type_col).replace_strict(EVENT_TYPES, default=0, return_dtype=pl.Int64)
                           .alias("_type"))
        grouped = ordered.group_by(user_col, maintain_order=True).agg(columns)
        contexts = None
        if time_col or type_col:
            n = [len(items) for items in grouped[item_col].to_list()]
            seconds = grouped["_seconds"].to_list() if time_col else [[0] * m for m in n]
            types = grouped["_type"].to_list() if type_col else [[0] * m for m in n]
            contexts = [list(zip(t, s)) for t, s in zip(types, seconds)]
        return cls.from_lists([str(u) for u in grouped[user_col].to_list()],
                              [[str(i) for i in items] for items in grouped[item_col].to_list()], contexts)


def load_sequences(path: Path | str) -> Sequences:
    """Read `user item item ...` per line (one line per user, time order), or `user item` per line
    (lines of a user consecutive and time-ordered, as in SASRec's data files)."""
    path = Path(path)
    if not path.exists():
        raise InvalidInputError(f"{path}: no such file", field="sequences")
    if not path.is_file():
        raise InvalidInputError(f"{path}: not a file", field="sequences")
    users: list[str] = []
    lists: list[list[str]] = []
    index: dict[str, int] = {}
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                parts = raw.decode("utf-8").split()
            except UnicodeDecodeError:
                raise InvalidInputError(f"{path.name}: line {number} is not valid UTF-8", field="sequences") from None
            if not parts:
                continue
            if len(parts) < 2:
                raise InvalidInputError(f"{path.name}: line {number} has a user but no item", field="sequences")
            user = parts[0]
            if user not in index:
                index[user] = len(users)
                users.append(user)
                lists.append([])
            lists[index[user]].extend(parts[1:])
    if not users:
        raise InvalidInputError(f"{path.name}: no sequences found", field="sequences")
    return Sequences.from_lists(users, lists)


def sample_users(users: np.ndarray, max_users: int | None, seed: int) -> np.ndarray:
    """`max_users` of `users` drawn with `seed`, sorted (all of them when fewer): the one sample that
    evaluation and model choice both draw."""
    if max_users is not None and len(users) > max_users:
        return np.sort(np.random.default_rng(seed).choice(users, size=max_users, replace=False))
    return users


@dataclass
class Split:
    """Leave-one-out split. `train[u]` is the user's training prefix; targets are -1 where absent."""

    data: Sequences
    train: list[np.ndarray]
    valid_target: np.ndarray
    test_target: np.ndarray
    eval_users: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    # Users whose validation targets choose the model (early stopping, blend weights). None: every
    # user's validation target is held out of training. Otherwise the other users' validation items
    # are training data too (`fit_sequences`).
    selection_users: np.ndarray | None = None
    # Users whose test targets judge the model (a shop's promotion gate). None (what every benchmark
    # uses): every user's test target is held out. Otherwise every other user's whole sequence is
    # training data (`with_holdout`).
    gate_users: np.ndarray | None = None

    def _checked(self, users: np.ndarray | None, targets: np.ndarray, what: str) -> np.ndarray | None:
        if users is None:
            return None
        users = np.sort(np.asarray(users, dtype=np.int64))
        if len(users) and (users[0] < 0 or users[-1] >= len(self.train) or (targets[users] < 0).any()):
            raise InvalidInputError(f"{what} users must be users with a {what} target", field=f"{what}_users")
        return users

    def with_selection(self, users: np.ndarray | None) -> "Split":
        """This split with `users` (a subset of eval_users) reserving their validation targets for
        model choice and every other user's validation item given to training; test targets stay
        held out for everyone (a holdout's gate is dropped). None: nothing given to training."""
        return Split(data=self.data, train=self.train, valid_target=self.valid_target, test_target=self.test_target,
                     eval_users=self.eval_users, selection_users=self._checked(users, self.valid_target, "validation"))

    def with_holdout(self, users: np.ndarray) -> "Split":
        """What a shop trains its served model on: `users` (a subset of eval_users) keep their
        validation and test targets out of training (one chooses the epoch, the other judges the model
        against the champion); every other user's whole sequence, newest event included, trains."""
        users = self._checked(users, self.test_target, "test")
        return Split(data=self.data, train=self.train, valid_target=self.valid_target, test_target=self.test_target,
                     eval_users=self.eval_users, selection_users=users, gate_users=users)

    def reserve(self, n_users: int, seed: int = 0) -> "Split":
        """`with_selection` of `n_users` users sampled from eval_users (all of them when fewer)."""
        return self.with_selection(self.selection(n_users, seed))

    def selection(self, max_users: int | None = None, seed: int = 0) -> np.ndarray:
        """The users whose validation targets choose models: the reserved ones, else a sample of
        `max_users` eval users (all when fewer; the sample evaluate_ranking(max_users=, seed=) draws)."""
        if self.selection_users is not None:
            return self.selection_users
        return sample_users(self.eval_users, max_users, seed)

    def _fit_lengths(self) -> np.ndarray:
        """Per user, how many of their first events are training data under this split."""
        lengths = np.fromiter((len(t) for t in self.train), dtype=np.int64, count=len(self.train))
        if self.selection_users is not None:
            given = self.valid_target >= 0
            given[self.selection_users] = False
            lengths += given
            if self.gate_users is not None:
                given = self.test_target >= 0
                given[self.gate_users] = False
                lengths += given
        return lengths

    def fit_sequences(self) -> list[np.ndarray]:
        """What a model may train on: `train`, plus the validation item of every user outside the
        selection (`with_selection`), plus the test item of every user outside the gate
        (`with_holdout`); exactly `train` when neither is set. Always a prefix of each sequence."""
        lengths = self._fit_lengths()
        if all(n == len(t) for n, t in zip(lengths, self.train)):
            return self.train
        return [t if n == len(t) else s[:n] for n, t, s in zip(lengths, self.train, self.data.sequences)]

    def fit_context(self) -> list[np.ndarray] | None:
        """Context aligned with `fit_sequences()`, None when the data has none."""
        if self.data.context is None:
            return None
        return [c[:n] for c, n in zip(self.data.context, self._fit_lengths())]

    def history(self, user: int, stage: str) -> np.ndarray:
        """What the model may see before predicting `stage`'s target (train, plus the valid item for test)."""
        if stage == "valid":
            return self.train[user]
        return np.append(self.train[user], self.valid_target[user])

    def history_context(self, user: int, stage: str) -> np.ndarray | None:
        """The context rows of `history(user, stage)`, None when the data has none."""
        if self.data.context is None:
            return None
        return self.data.context[user][:len(self.train[user]) + (stage == "test")]


def leave_one_out(data: Sequences) -> Split:
    train, valid, test = [], [], []
    for seq in data.sequences:
        if len(seq) >= 3:
            train.append(seq[:-2])
            valid.append(seq[-2])
            test.append(seq[-1])
        else:
            train.append(seq)
            valid.append(-1)
            test.append(-1)
    test_arr = np.asarray(test, dtype=np.int64)
    return Split(data=data, train=train, valid_target=np.asarray(valid, dtype=np.int64), test_target=test_arr,
                 eval_users=np.flatnonzero(test_arr >= 0))
