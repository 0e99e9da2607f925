"""RecBole 1.2.1 SASRec on shopmind's data and split, scored by RecBole and by shopmind's evaluator.

Runs inside bench/peers/recbole/venv (see setup.sh). The data comes from bench/datasets.load(name), is
written as RecBole atomic files to a temporary directory (never into the repo), trained with RecBole's
own Trainer (early stopping on validation NDCG@10), and the best checkpoint is then scored twice:

- `recbole_own`: RecBole's full-sort evaluator (for sequential models it does NOT mask items already in
  the user's history);
- `shopmind_evaluator`: shopmind.evaluation.evaluate_ranking with a score_fn that feeds each history to the
  trained SASRec (every history item masked, a repeated target counts as a miss; ties ranked pessimistically).

`check_unmasked` scores the same model through our score_fn but without masking; it must reproduce
RecBole's own numbers, which proves that the score_fn (id mapping, padding, truncation) is the model
RecBole evaluated.

    bench/peers/recbole/venv/bin/python bench/peers/recbole/run_sasrec.py --dataset ml100k \
        --out bench/out/recbole_ml100k.json
"""

from __future__ import annotations

import os

# torch >= 2.6 loads with weights_only=True by default, which breaks RecBole's best-checkpoint reload.
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# With 2 OpenMP threads on a 2-core machine that also runs other work, spinning OpenMP workers make
# every batch ~4x slower (measured: 1.6 s vs 0.46 s per SASRec batch); passive waiting avoids that.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import atexit  # noqa: E402
import importlib.metadata  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
NAMES = ("beauty", "video", "ml100k", "taobao")
MAX_LEN = 50


def import_shopmind():
    """shopmind's evaluation modules and bench/datasets.py without shopmind's heavy dependencies.

    `shopmind/__init__.py` imports the whole engine (pydantic, polars, sqlalchemy...), which this venv does
    not have; the evaluation modules themselves only need numpy. Register bare `shopmind` and
    `shopmind.evaluation` packages pointing at the source tree (their __init__ files are not run, so
    whatever they may import later cannot break this venv), import the numpy-only submodules, and expose
    the names bench/datasets.py imports from `shopmind.evaluation`."""
    for name, path in (("shopmind", ROOT / "shopmind"), ("shopmind.evaluation", ROOT / "shopmind" / "evaluation")):
        if name not in sys.modules:
            pkg = types.ModuleType(name)
            pkg.__path__ = [str(path)]
            sys.modules[name] = pkg
    import shopmind.evaluation.metrics as metrics
    import shopmind.evaluation.protocol as protocol
    import shopmind.evaluation.sequences as sequences

    evaluation = sys.modules["shopmind.evaluation"]
    for mod in (metrics, protocol, sequences):
        for attr in dir(mod):
            if not attr.startswith("_"):
                setattr(evaluation, attr, getattr(mod, attr))

    spec = importlib.util.spec_from_file_location("shopmind_bench_datasets", ROOT / "bench" / "datasets.py")
    datasets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(datasets)
    return evaluation, protocol.ranks_and_topk, datasets


def write_atomic(seqs, data_dir: Path, name: str) -> Path:
    """`<name>.inter` with user and item tokens = shopmind indices, timestamp = position in the sequence."""
    d = data_dir / name
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{name}.inter"
    with open(path, "w") as fh:
        fh.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for u, seq in enumerate(seqs.sequences):
            for pos, item in enumerate(seq):
                fh.write(f"{u}\t{int(item)}\t{pos}\n")
    return path


def write_benchmark(split, data_dir: Path, name: str) -> dict:
    """RecBole's pre-split files (`benchmark_filename`), for training the peer on exactly what our
    model trains on when only some users' validation items are held out (`split.selection_users`):

    - train: one row per training target of `split.fit_sequences()` with the (at most 50) items before
      it, i.e. RecBole's own every-prefix augmentation of those sequences;
    - valid: one row per selection user (their training history, their validation target): early
      stopping sees the same users ours does;
    - test: one row per evaluated user (history incl. the validation item, the test target), as ours.
    Returns the number of rows per file."""
    d = data_dir / name
    d.mkdir(parents=True, exist_ok=True)
    counts = {}
    header = "user_id:token\titem_id:token\titem_id_list:token_seq\ttimestamp:float\n"

    def row(fh, u, history, target, t):
        fh.write(f"{u}\t{int(target)}\t{' '.join(str(int(i)) for i in history[-MAX_LEN:])}\t{t}\n")

    with open(d / f"{name}.train.inter", "w") as fh:
        fh.write(header)
        n = 0
        for u, seq in enumerate(split.fit_sequences()):
            for i in range(1, len(seq)):
                row(fh, u, seq[:i], seq[i], i)
                n += 1
        counts["train"] = n
    for stage, users, targets in (("valid", split.selection_users, split.valid_target),
                                  ("test", split.eval_users, split.test_target)):
        with open(d / f"{name}.{stage}.inter", "w") as fh:
            fh.write(header)
            for u in users:
                history = split.history(int(u), stage)
                row(fh, int(u), history, targets[u], len(history))
        counts[stage] = int(len(users))
    return counts


def decoded_rows(dataset, data):
    """A RecBole split's rows in shopmind's ids: users, targets, history lists and their lengths."""
    uid_tok = dataset.field2id_token["user_id"]
    iid_tok = dataset.field2id_token["item_id"]
    feat = data._dataset.inter_feat
    users = np.array([int(t) for t in uid_tok[feat["user_id"].numpy()]])
    targets = np.array([int(t) for t in iid_tok[feat["item_id"].numpy()]])
    lists, lens = feat["item_id_list"].numpy(), feat["item_length"].numpy()
    histories = [[int(t) for t in iid_tok[lists[r, : lens[r]]]] for r in range(len(users))]
    return users, targets, histories


def items_in_rows(split) -> set[int]:
    """The items that write_benchmark puts in some row (as a target or in a history). Items that only
    users with a single event ever touched are in none: such a user gives no training row and is not
    evaluated, so RecBole never learns those items exist (the score function gives them -inf)."""
    items: set[int] = set()
    for seq in split.fit_sequences():
        if len(seq) >= 2:
            items.update(int(i) for i in seq)
    for users, stage, targets in ((split.selection_users, "valid", split.valid_target),
                                  (split.eval_users, "test", split.test_target)):
        for u in users:
            items.add(int(targets[u]))
            items.update(int(i) for i in split.history(int(u), stage)[-MAX_LEN:])
    return items


def check_benchmark(dataset, valid_data, test_data, split, counts):
    """Assert that RecBole read the pre-split files as written: its items are those of the rows, the
    row counts match, and the valid and test rows' users, targets and histories equal ours."""
    in_rows = items_in_rows(split)
    assert dataset.item_num - 1 == len(in_rows), (dataset.item_num - 1, len(in_rows))
    assert set(int(t) for t in dataset.field2id_token["item_id"][1:]) == in_rows, "items differ"
    assert sum(dataset.file_size_list) == sum(counts.values()), (dataset.file_size_list, counts)
    details = {"rows": counts, "items_in_no_row": split.data.n_items - len(in_rows)}
    for stage, data, users_all, targets_all in (("test", test_data, split.eval_users, split.test_target),
                                                ("valid", valid_data, split.selection_users, split.valid_target)):
        users, targets, histories = decoded_rows(dataset, data)
        assert np.array_equal(np.sort(users), np.sort(users_all)), f"{stage}: users differ"
        assert np.array_equal(targets, targets_all[users]), f"{stage}: targets differ"
        for u, hist in zip(users, histories):
            assert hist == split.history(int(u), stage)[-MAX_LEN:].tolist(), f"{stage}: history of user {u} differs"
        details[stage] = {"recbole_users": int(len(users))}
    return details


def recbole_config(args, data_dir: Path, work_dir: Path, name: str) -> dict:
    presplit = args.valid_users > 0
    return {
        # data: read our atomic file as is; filter nothing, drop no duplicates
        "data_path": str(data_dir),
        "checkpoint_dir": str(work_dir / "saved"),
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "item_id_list", "timestamp"] if presplit
                     else ["user_id", "item_id", "timestamp"]},
        # pre-split files (--valid-users): the history lists share the item vocabulary
        "benchmark_filename": ["train", "valid", "test"] if presplit else None,
        "alias_of_item_id": ["item_id_list"] if presplit else None,
        "user_inter_num_interval": "[0,inf)",
        "item_inter_num_interval": "[0,inf)",
        "rm_dup_inter": None,
        "val_interval": None,
        "MAX_ITEM_LIST_LENGTH": MAX_LEN,
        # model
        "hidden_size": 64,
        "inner_size": 256,
        "n_layers": 2,
        "n_heads": 2,
        "hidden_dropout_prob": 0.5,
        "attn_dropout_prob": 0.5,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-12,
        "initializer_range": 0.02,
        "loss_type": "CE",
        # training
        "train_batch_size": 256,
        "learning_rate": 0.001,
        "learner": "adam",
        "train_neg_sample_args": None,
        "epochs": args.epochs,
        "stopping_step": args.stopping_step,
        "eval_step": 1,
        # evaluation (the protocol of shared/peers/README.md)
        "eval_args": {"split": {"LS": "valid_and_test"}, "group_by": "user", "order": "TO", "mode": "full"},
        "metrics": ["Hit", "NDCG"],
        "topk": [10],
        "valid_metric": "NDCG@10",
        "eval_batch_size": 2048,
        # environment
        "seed": args.seed,
        "reproducibility": True,
        "use_gpu": False,
        "device": "cpu",
        "gpu_id": "",
        "worker": 0,
        "show_progress": False,
        "save_dataset": False,
        "save_dataloaders": False,
        "log_wandb": False,
        "state": "INFO",
    }


def check_split(dataset, train_data, valid_data, test_data, split, seqs):
    """Assert that RecBole's dataset and LS valid_and_test split equal shopmind's data and leave_one_out."""
    n_users, n_items = len(seqs.user_ids), seqs.n_items
    # nothing filtered: every user, item and interaction arrived ([PAD] is id 0)
    assert dataset.user_num - 1 == n_users, (dataset.user_num - 1, n_users)
    assert dataset.item_num - 1 == n_items, (dataset.item_num - 1, n_items)
    # after RecBole's data augmentation there is one row per interaction that has a predecessor
    expected_rows = sum(max(len(s) - 1, 0) for s in seqs.sequences)
    assert dataset.inter_num == expected_rows, (dataset.inter_num, expected_rows)

    details = {}
    for stage, data, targets_all in (("test", test_data, split.test_target), ("valid", valid_data, split.valid_target)):
        users, targets, histories = decoded_rows(dataset, data)
        assert len(np.unique(users)) == len(users), f"{stage}: a user has more than one {stage} row"
        expected = np.flatnonzero(targets_all >= 0)
        only_shopmind = np.setdiff1d(expected, users)
        only_recbole = np.setdiff1d(users, expected)
        assert len(only_recbole) == 0, f"{stage}: RecBole evaluates users shopmind does not: {only_recbole[:5]}"
        if stage == "test":
            assert len(only_shopmind) == 0, f"test: users missing in RecBole: {only_shopmind[:5]}"
        else:
            # RecBole's leave-one-out gives a user with 3 interactions (2 augmented rows) a test row and no
            # valid row (its valid item becomes a training target); shopmind validates them. Test is unaffected.
            lengths = np.array([len(seqs.sequences[u]) for u in only_shopmind], dtype=np.int64)
            assert np.all(lengths == 3), f"valid: users missing in RecBole with length != 3: {only_shopmind[:5]}"
        assert np.array_equal(targets, targets_all[users]), f"{stage}: targets differ"
        for u, hist in zip(users, histories):  # the history RecBole feeds = the last 50 items of shopmind's history
            assert hist == split.history(int(u), stage)[-MAX_LEN:].tolist(), f"{stage}: history of user {u} differs"
        details[stage] = {"recbole_users": int(len(users)), "shopmind_users": int(len(expected)),
                          "shopmind_only_users": int(len(only_shopmind))}
    return details


def make_score_fn(model, dataset, n_items, torch):
    """score_fn over shopmind's item index space, from the trained SASRec (as in SASRec.full_sort_predict)."""
    tok2id = dataset.field2token_id["item_id"]
    to_internal = np.zeros(n_items, dtype=np.int64)  # 0 = [PAD] = never seen by RecBole
    for k in range(n_items):
        to_internal[k] = tok2id.get(str(k), 0)
    known = to_internal > 0

    @torch.no_grad()
    def score(histories):
        model.eval()
        seq = np.zeros((len(histories), MAX_LEN), dtype=np.int64)  # left-aligned, right-padded like RecBole
        lens = np.zeros(len(histories), dtype=np.int64)
        for r, h in enumerate(histories):
            h = np.asarray(h, dtype=np.int64)[-MAX_LEN:]
            seq[r, : len(h)] = to_internal[h]
            lens[r] = len(h)
        if np.any(lens == 0):
            raise ValueError("SASRec needs at least one history item")
        out = model.forward(torch.from_numpy(seq), torch.from_numpy(lens))
        internal = (out @ model.item_embedding.weight.T).numpy().astype(np.float64)
        scores = np.full((len(histories), n_items), -np.inf)
        scores[:, known] = internal[:, to_internal[known]]
        return scores

    return score


def unmasked_report(score_fn, split, stage, ranks_and_topk, ranking_metrics, k=10, batch=1024):
    """Same scorer, no history masking: must reproduce RecBole's own figures."""
    targets_all = split.test_target if stage == "test" else split.valid_target
    users = np.flatnonzero(targets_all >= 0)
    ranks = []
    for s in range(0, len(users), batch):
        chunk = users[s:s + batch]
        hist = [split.history(int(u), stage) for u in chunk]
        r, _ = ranks_and_topk(score_fn(hist), [np.zeros(0, dtype=np.int64)] * len(chunk), targets_all[chunk], k)
        ranks.append(r)
    hr, ndcg, _ = ranking_metrics(np.concatenate(ranks), k)
    return {"users": int(len(users)), f"hr@{k}": hr, f"ndcg@{k}": ndcg}


class WallClockCap(Exception):
    pass


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, choices=NAMES)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--stopping-step", type=int, default=10)
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="wall-clock cap on training: no epoch is started that would end past it (projected "
                         "from the mean epoch time); the best checkpoint so far is used")
    ap.add_argument("--seed", type=int, default=2020)
    ap.add_argument("--valid-users", type=int, default=0,
                    help="train on what shopmind's default behaviour model trains on: hold out the validation "
                         "items of this many users only (sampled as shopmind samples them, --selection-seed), "
                         "who alone choose the epoch; every other user's validation item is a training target. "
                         "0: RecBole's own leave-one-out (every validation item held out)")
    ap.add_argument("--selection-seed", type=int, default=0, help="the seed of shopmind's model (its `seed`)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temporary data/checkpoint directory")
    args = ap.parse_args(argv)
    sys.argv = sys.argv[:1]  # RecBole's Config also parses `--key=value` from the command line: keep ours out
    out = args.out or ROOT / "bench" / "out" / f"recbole_{args.dataset}.json"
    t_start = time.time()

    def on_signal(signum, _frame):  # leave a trace in the log when the run is stopped from outside
        print(f"[{args.dataset}] stopped by signal {signal.Signals(signum).name} after {time.time() - t_start:.0f}s",
              file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)

    evaluation, ranks_and_topk, datasets = import_shopmind()
    from shopmind.evaluation.metrics import ranking_metrics

    seqs = datasets.load(args.dataset)
    split = evaluation.leave_one_out(seqs)
    print(f"[{args.dataset}] {len(seqs.user_ids):,} users, {seqs.n_items:,} items, "
          f"{seqs.n_interactions:,} interactions, {len(split.eval_users):,} evaluated users", flush=True)

    work = Path(tempfile.mkdtemp(prefix=f"recbole_{args.dataset}_"))
    if not args.keep_tmp:  # also on errors and SIGTERM/SIGINT (SystemExit), not on SIGKILL
        atexit.register(shutil.rmtree, work, ignore_errors=True)
    name = f"sm_{args.dataset}"  # not a RecBole built-in name: no bundled yaml, no download attempt
    if args.valid_users > 0:
        split = split.reserve(args.valid_users, args.selection_seed)
        counts = write_benchmark(split, work / "data", name)
    else:
        write_atomic(seqs, work / "data", name)
    cwd = os.getcwd()
    os.chdir(work)  # RecBole writes ./log and ./log_tensorboard relative to the working directory

    import torch
    import recbole
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_logger, init_seed

    torch.set_num_threads(args.threads)
    cfg_dict = recbole_config(args, work / "data", work, name)
    config = Config(model="SASRec", dataset=name, config_dict=cfg_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    torch.set_num_threads(args.threads)

    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    if args.valid_users > 0:
        split_check = check_benchmark(dataset, valid_data, test_data, split, counts)
    else:
        split_check = check_split(dataset, train_data, valid_data, test_data, split, seqs)
    print(f"[{args.dataset}] split check passed: {split_check}", flush=True)

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = SASRec(config, train_data._dataset).to(config["device"])
    # RecBole 1.2.1 turns anomaly detection on at import (sine.py); it only slows training down.
    torch.autograd.set_detect_anomaly(False)

    trainer = Trainer(config, model)
    cap_s = args.max_minutes * 60 if args.max_minutes else None
    history = []
    state = {"epochs_run": 0, "best_epoch": None, "capped": False, "t0": None}

    orig_train_epoch = trainer._train_epoch

    def train_epoch(train, epoch_idx, *a, **kw):
        if cap_s is not None and state["epochs_run"] > 0:
            elapsed = time.time() - state["t0"]
            per_epoch = elapsed / state["epochs_run"]
            if elapsed + per_epoch > cap_s:
                state["capped"] = True
                raise WallClockCap(f"{elapsed:.0f}s elapsed, next epoch ~{per_epoch:.0f}s, cap {cap_s:.0f}s")
        loss = orig_train_epoch(train, epoch_idx, *a, **kw)
        state["epochs_run"] += 1
        return loss

    trainer._train_epoch = train_epoch

    orig_save = trainer._save_checkpoint

    def save_checkpoint(epoch, *a, **kw):
        state["best_epoch"] = int(epoch)
        return orig_save(epoch, *a, **kw)

    trainer._save_checkpoint = save_checkpoint

    def on_epoch(epoch_idx, valid_score):
        history.append({"epoch": int(epoch_idx), "valid_ndcg@10": float(valid_score),
                        "seconds": round(time.time() - state["t0"], 1)})
        print(f"[{args.dataset}] epoch {epoch_idx} valid NDCG@10 {valid_score:.4f} "
              f"({time.time() - state['t0']:.0f}s)", flush=True)

    state["t0"] = time.time()
    try:
        trainer.fit(train_data, valid_data, saved=True, show_progress=False, callback_fn=on_epoch)
    except WallClockCap as cap:
        print(f"[{args.dataset}] capped: {cap}", flush=True)
    train_seconds = time.time() - state["t0"]
    if state["best_epoch"] is None:
        raise RuntimeError("no checkpoint was saved (no epoch finished)")

    own_test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    own_valid = trainer.evaluate(valid_data, load_best_model=False, show_progress=False)
    torch.autograd.set_detect_anomaly(False)

    score_fn = make_score_fn(model, dataset, seqs.n_items, torch)
    t_eval = time.time()
    test_report, _, _ = evaluation.evaluate_ranking(score_fn, split, "test", k=10)
    valid_report, _, _ = evaluation.evaluate_ranking(score_fn, split, "valid", k=10, users=split.selection())
    eval_seconds = time.time() - t_eval
    unmasked = unmasked_report(score_fn, split, "test", ranks_and_topk, ranking_metrics)
    agree = (abs(unmasked["hr@10"] - float(own_test["hit@10"])) < 1e-3
             and abs(unmasked["ndcg@10"] - float(own_test["ndcg@10"])) < 1e-3)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    os.chdir(cwd)
    result = {
        "dataset": args.dataset,
        "peer": "RecBole SASRec",
        "users": len(seqs.user_ids),
        "items": seqs.n_items,
        "interactions": seqs.n_interactions,
        "epochs_run": state["epochs_run"],
        "best_epoch": state["best_epoch"],
        "capped": state["capped"],
        "max_minutes": args.max_minutes,
        "valid_users": args.valid_users,
        "training_data": (f"pre-split: validation items of all but {args.valid_users} users train"
                          if args.valid_users > 0 else "RecBole leave-one-out: no validation item trains"),
        "train_seconds": round(train_seconds, 1),
        "seconds_per_epoch": round(train_seconds / max(state["epochs_run"], 1), 1),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "recbole_own": {"test": {"hit@10": float(own_test["hit@10"]), "ndcg@10": float(own_test["ndcg@10"])},
                        "valid": {"hit@10": float(own_valid["hit@10"]), "ndcg@10": float(own_valid["ndcg@10"])},
                        "note": "RecBole full sort; sequential models are not masked for history items"},
        "shopmind_evaluator": {"test": test_report.as_dict(), "valid": valid_report.as_dict(),
                               "eval_seconds": round(eval_seconds, 1),
                               "note": "all history items masked (a repeated target is a miss); ties ranked pessimistically"},
        "check_unmasked": {"test": unmasked, "agrees_with_recbole_own": bool(agree)},
        "split_check": split_check,
        "valid_history": history,
        "config": {k: v for k, v in cfg_dict.items() if k not in ("data_path", "checkpoint_dir")},
        "notes": ["torch.autograd.set_detect_anomaly(False) after building the model (RecBole 1.2.1 turns "
                  "anomaly detection on at import; changes speed, not results)",
                  "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 for RecBole's checkpoint reload",
                  f"torch threads = {args.threads}; peak_rss_mb is the whole process (ru_maxrss)"],
        "versions": {"recbole": recbole.__version__, "torch": torch.__version__, "numpy": np.__version__,
                     "python": sys.version.split()[0]},
        "total_seconds": round(time.time() - t_start, 1),
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("dataset", "epochs_run", "best_epoch", "capped", "train_seconds",
                                             "peak_rss_mb", "recbole_own", "check_unmasked")}, indent=2))
    print(f"[{args.dataset}] shopmind evaluator test {result['shopmind_evaluator']['test']}")
    print(f"[{args.dataset}] wrote {out}", flush=True)
    if not agree:
        print(f"[{args.dataset}] WARNING: unmasked shopmind scoring does not reproduce RecBole's own test figures",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
