"""Per-user item sequences and the leave-one-out split.

Items are dense integer ids 0..n_items-1 (the raw ids are kept in `item_ids`). A sequence is in time
order. The split follows SASRec and RecBole's `LS: valid_and_test`: for every user with at least three
interactions the last item is the test target, the second last the validation target, the rest train;
users with fewer than three interactions only contribute training data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shopmind.exceptions import InvalidInputError


@dataclass
class Sequences:
    user_ids: list[str]
    item_ids: list[str]
    sequences: list[np.ndarray]  # int64 arrays of item indices, time-ordered

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    @classmethod
    def from_lists(cls, users: list[str], lists: list[list[str]]) -> "Sequences":
        vocab: dict[str, int] = {}
        seqs = []
        for items in lists:
            seqs.append(np.fromiter((vocab.setdefault(i, len(vocab)) for i in items), dtype=np.int64, count=len(items)))
        return cls(user_ids=list(users), item_ids=list(vocab), sequences=seqs)

    @classmethod
    def from_frame(cls, frame, user_col: str = "user", item_col: str = "item", time_col: str | None = "ts_ms"):
        """From a Polars frame of interactions (sorted by time within each user)."""
        import polars as pl

        ordered = frame.sort([user_col, time_col]) if time_col else frame
        grouped = ordered.group_by(user_col, maintain_order=True).agg(pl.col(item_col))
        return cls.from_lists([str(u) for u in grouped[user_col].to_list()],
                              [[str(i) for i in items] for items in grouped[item_col].to_list()])


def load_sequences(path: Path | str) -> Sequences:
    """Read `user item item ...` per line (one line per user, time order), or `user item` per line
    (lines of a user consecutive and time-ordered, as in SASRec's data files)."""
    path = Path(path)
    if not path.exists():
        raise InvalidInputError(f"{path}: no such file", field="sequences")
    users: list[str] = []
    lists: list[list[str]] = []
    index: dict[str, int] = {}
    with open(path) as fh:
        for number, line in enumerate(fh, start=1):
            parts = line.split()
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


@dataclass
class Split:
    """Leave-one-out split. `train[u]` is the user's training prefix; targets are -1 where absent."""

    data: Sequences
    train: list[np.ndarray]
    valid_target: np.ndarray
    test_target: np.ndarray
    eval_users: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def history(self, user: int, stage: str) -> np.ndarray:
        """What the model may see before predicting `stage`'s target (train, plus the valid item for test)."""
        if stage == "valid":
            return self.train[user]
        return np.append(self.train[user], self.valid_target[user])


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
