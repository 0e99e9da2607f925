"""The public benchmark data sets as per-user sequences, one conversion for every model and peer.

Read from ../shared/data (never copied into the repo). Each loader returns shopmind Sequences in time
order; `write_sequence_file` writes the common `user item item ...` format that `shopmind evaluate
--sequences` and the RecBole peer both read, so every side sees identical data.

- beauty:  Amazon Beauty (ICLRec copy), already one line per user in time order, 5-core.
- video:   Amazon Video Games (SASRec copy), `user item` lines grouped per user in time order.
- ml100k:  MovieLens-100K, every rating is an interaction, ordered by timestamp (ties by file order).
- taobao:  Taobao UserBehavior head, every behaviour (pv/cart/fav/buy) is an interaction, ordered by
           time; a repeat of the same item right after itself is collapsed (page refreshes); then the
           usual 5-core filter (users and items with at least 5 interactions, repeated until stable).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shopmind.evaluation import Sequences, load_sequences  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "rec"
NAMES = ("beauty", "video", "ml100k", "taobao")


def _from_interactions(rows: list[tuple[str, str, float]]) -> Sequences:
    """rows of (user, item, time) in file order -> time-ordered sequences (stable for ties)."""
    by_user: dict[str, list[tuple[float, int, str]]] = {}
    for n, (user, item, ts) in enumerate(rows):
        by_user.setdefault(user, []).append((ts, n, item))
    users = list(by_user)
    return Sequences.from_lists(users, [[item for _, _, item in sorted(by_user[u])] for u in users])


def _core(seqs: list[tuple[str, list[str]]], k: int = 5) -> list[tuple[str, list[str]]]:
    while True:
        counts: dict[str, int] = {}
        for _, items in seqs:
            for i in items:
                counts[i] = counts.get(i, 0) + 1
        kept = [(u, [i for i in items if counts[i] >= k]) for u, items in seqs]
        kept = [(u, items) for u, items in kept if len(items) >= k]
        if kept == seqs:
            return kept
        seqs = kept


def load(name: str) -> Sequences:
    if name == "beauty":
        return load_sequences(DATA / "amazon_Beauty_iclrec.txt")
    if name == "video":
        return load_sequences(DATA / "amazon_Video_sasrec.txt")
    if name == "ml100k":
        rows = []
        with open(DATA / "ml-100k.inter") as fh:
            next(fh)
            for line in fh:
                user, item, _rating, ts = line.rstrip("\n").split("\t")
                rows.append((user, item, float(ts)))
        return _from_interactions(rows)
    if name == "taobao":
        rows = []
        with open(DATA / "taobao_UserBehavior_head.csv") as fh:
            lines = fh.read().splitlines()[:-1]  # the file is a byte-truncated head: drop the last line
        for line in lines:
            user, item, _cat, _behaviour, ts = line.split(",")
            rows.append((user, item, float(ts)))
        timed = _from_interactions(rows)
        seqs = []
        for user, seq in zip(timed.user_ids, timed.sequences):
            items = [timed.item_ids[i] for i in seq]
            collapsed = [x for n, x in enumerate(items) if n == 0 or x != items[n - 1]]
            seqs.append((user, collapsed))
        seqs = _core(seqs)
        return Sequences.from_lists([u for u, _ in seqs], [items for _, items in seqs])
    raise ValueError(f"unknown data set {name!r}: expected one of {NAMES}")


def write_sequence_file(seqs: Sequences, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        for user, seq in zip(seqs.user_ids, seqs.sequences):
            fh.write(user + " " + " ".join(seqs.item_ids[i] for i in seq) + "\n")
    return path


if __name__ == "__main__":
    for name in NAMES:
        s = load(name)
        lengths = [len(x) for x in s.sequences]
        print(f"{name}: {len(s.user_ids):,} users, {s.n_items:,} items, {s.n_interactions:,} interactions, "
              f"mean length {sum(lengths) / len(lengths):.1f}")
