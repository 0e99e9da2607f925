"""The privacy/utility curve of the behaviour model on a public data set, in one run.

    .venv/bin/python bench/dp_curve.py --dataset beauty --epsilons 0.5,1,2,4,8,16 [--epochs 20]
        [--batch-size 256] [--negatives 256] [--audit] [--threads 2] [--out bench/out/dp_curve_beauty]
        [--content [--content-only]]     # ml100k, shop: title embeddings for every model
        [--pairs-share 0.5]              # the DP models' share of epsilon for item pairs (0: network alone)
    .venv/bin/python bench/dp_curve.py --replot bench/out/dp_curve_beauty.json   # the plot of a saved run

Trains the non-private behaviour model (its default configuration) and one DP-SGD model per epsilon
(delta = 1 / number of users) on the same leave-one-out split, scores all of them with the same
evaluator (HR@10, NDCG@10, full ranking), records training wall time and its ratio to the
non-private time, and with --audit the membership-inference AUC of each configuration
(shopmind/privacy/membership.py). Writes <out>.json and, when matplotlib is installed, <out>.png:
HR@10 against epsilon, and the measured attack TPR/FPR point of each model next to the bound that
(epsilon, delta)-DP places on any attack.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datasets import item_content, load  # noqa: E402  (bench/datasets.py)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="beauty")
    parser.add_argument("--epsilons", default="0.5,1,2,4,8,16")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--negatives", type=int, default=256)
    parser.add_argument("--audit", action="store_true", help="also run the membership-inference audit per model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--content", action="store_true",
                        help="feed every model the items' title embeddings (public catalog text; ml100k, shop)")
    parser.add_argument("--content-only", action="store_true",
                        help="DP models represent items by their content alone (no per-item id vectors)")
    parser.add_argument("--pairs-share", type=float, default=None,
                        help="the DP models' cooccurrence_share (default: the model's default; 0: network alone)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--replot", default=None, metavar="JSON",
                        help="only draw the plot of an earlier run's <out>.json (next to it, as <out>.png)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    if args.replot:
        saved = json.loads(Path(args.replot).read_text())
        plot(saved["rows"], Path(args.replot).with_suffix(".png"), saved["meta"]["dataset"])
        return

    import torch

    from shopmind.privacy.tradeoff import privacy_curve

    torch.set_num_threads(args.threads)
    data = load(args.dataset, context=False)  # the DP model reads item ids (and content) only
    if args.dataset == "shop":  # known users only, as `shopmind train --dp` trains (one example per person)
        keep = np.array([n for n, u in enumerate(data.user_ids) if not u.startswith("s:")])
        data = data.subset(keep)
    content = item_content(args.dataset, data.item_ids) if args.content or args.content_only else None
    epsilons = [float(e) for e in args.epsilons.split(",") if e]
    started = time.perf_counter()
    # The DP models' width and dropout as the non-private size rule gives them for this data set, as every
    # recorded figure was measured. A benchmark may choose its configuration from the data; a shop's DP
    # training does not (PrivateBehaviourRecommender's defaults are fixed: DP_D_MODEL, DP_DROPOUT).
    from shopmind.recommend.behaviour import auto_config

    size = auto_config(data.n_items, data.n_interactions, float(np.mean([len(s) for s in data.sequences])))
    rows = privacy_curve(data, epsilons, {"epochs": args.epochs, "batch_size": args.batch_size,
                                          "n_negatives": args.negatives, "threads": args.threads,
                                          "content_only": args.content_only, "d_model": size["d_model"],
                                          "dropout": size["dropout"],
                                          **({} if args.pairs_share is None else
                                             {"cooccurrence_share": args.pairs_share})}, item_content=content,
                         audit=args.audit, progress=lambda msg: print(f"[{time.perf_counter() - started:7.0f}s] {msg}",
                                                                       flush=True))
    base_time = rows[0]["train_seconds"]
    for row in rows:
        row["train_time_vs_non_private"] = round(row["train_seconds"] / base_time, 2) if base_time else None
        print(json.dumps(row), flush=True)
    out = Path(args.out or ROOT / "bench" / "out" / f"dp_curve_{args.dataset}")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"dataset": args.dataset, "users": len(data.user_ids), "items": data.n_items, "args": vars(args),
            "machine": f"{platform.processor() or platform.machine()}, {args.threads} torch threads"}
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print("\n| model | epsilon | HR@10 | NDCG@10 | HR@10 vs non-private | train s | time vs non-private |"
          + (" MIA AUC (95% CI) | TPR@1%FPR |" if args.audit else ""))
    print("|---|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if args.audit else ""))
    for r in rows:
        eps = "-" if r["epsilon"] is None else f"{r['epsilon']:.2f}"
        line = (f"| {r['model']} | {eps} | {r['hr@10']:.4f} | {r['ndcg@10']:.4f} | {r['hr@10_vs_non_private']:.2f} "
                f"| {r['train_seconds']:.0f} | {r['train_time_vs_non_private']:.1f}x |")
        if args.audit:
            ci = r["mia_auc_95ci"]
            line += f" {r['mia_auc']:.3f} ({ci[0]:.3f}-{ci[1]:.3f}) | {r['mia_tpr_at_1pct_fpr']:.3f} |"
        print(line)
    plot(rows, out.with_suffix(".png"), args.dataset)


def plot(rows: list[dict], path: Path, dataset: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return
    from shopmind.privacy.membership import dp_tpr_bound

    private = [r for r in rows if r["epsilon"] is not None]
    fig, axes = plt.subplots(1, 2 if "mia_auc" in rows[0] else 1, figsize=(11 if "mia_auc" in rows[0] else 6, 4))
    axes = np.atleast_1d(axes)
    label = "DP (DP-SGD and item pairs)" if any(r.get("item_pairs") for r in private) else "DP-SGD"
    axes[0].plot([r["epsilon"] for r in private], [r["hr@10"] for r in private], "o-", label=label)
    axes[0].axhline(rows[0]["hr@10"], color="grey", linestyle="--", label="non-private")
    axes[0].set_xscale("log")
    axes[0].set_xlabel("epsilon (delta = 1/users)")
    axes[0].set_ylabel("HR@10 (full ranking)")
    axes[0].set_title(f"{dataset}: utility against epsilon")
    axes[0].legend()
    if "mia_auc" in rows[0]:
        fpr = np.linspace(0, 1, 201)
        for r in private:
            axes[1].plot(fpr, dp_tpr_bound(r["epsilon"], r["delta"], fpr), linewidth=0.8,
                         label=f"bound eps={r['epsilon']:.1f}")
        for r in rows:
            axes[1].scatter([0.01], [r["mia_tpr_at_1pct_fpr"]], label=f"attack, {r['model']}")
        axes[1].plot(fpr, fpr, color="grey", linestyle=":")
        axes[1].set_xscale("log")
        axes[1].set_xlim(1e-3, 1)
        axes[1].set_xlabel("attack false-positive rate")
        axes[1].set_ylabel("attack true-positive rate")
        axes[1].set_title("membership inference vs the DP bound")
        axes[1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
