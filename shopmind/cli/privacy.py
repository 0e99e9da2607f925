"""`shopmind privacy ...`: the privacy/utility curve and the membership-inference audit."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from shopmind.exceptions import InvalidInputError

app = typer.Typer(help="Differential privacy: trade-off curves and membership-inference audits.", no_args_is_help=True)
out = Console(soft_wrap=True)  # never wrap: --json output must stay parseable at any width
console = Console(stderr=True, soft_wrap=True)  # a message names paths whole, never broken


def _epsilons(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InvalidInputError(f"--epsilons must be numbers separated by commas, got {text!r}", field="epsilons")
    if not values or not all(0 < v < math.inf for v in values):  # nan fails every comparison
        raise InvalidInputError("--epsilons needs positive, finite numbers", field="epsilons")
    return values


def _data(sequences: Optional[Path], private: bool = False):
    """The sequence file, or the shop's consented events as training reads them; `private` as DP
    training reads them (`train --dp`): known users only, one example per person, over the catalog."""
    from shopmind.evaluation import load_sequences

    if sequences is not None:
        return load_sequences(sequences)
    from shopmind.cli.main import _shop
    from shopmind.training.pipeline import private_sequences, shop_sequences

    shop = _shop()
    try:
        seqs = shop_sequences(shop.training_events("personalization"))[0]
        return private_sequences(seqs, shop.items_frame()["item_id"].to_list()) if private else seqs
    finally:
        shop.close()


@app.command()
def curve(
    sequences: Annotated[Path, typer.Option(help="File with one line per user: `user item item ...` in time order.")],
    epsilons: Annotated[str, typer.Option(help="Comma-separated epsilons to train DP models at.")] = "1,8",
    epochs: Annotated[int, typer.Option(min=1, help="DP-SGD passes over the users.")] = 20,
    audit: Annotated[bool, typer.Option(help="Also run the membership-inference audit of each model.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
):
    """Train the non-private and DP behaviour models on a sequence file; print HR@10, NDCG@10, the
    achieved epsilon and the membership-inference AUC of each."""
    from shopmind.cli.main import _run
    from shopmind.privacy.tradeoff import privacy_curve

    def body():
        values = _epsilons(epsilons)
        data = _data(sequences)
        with console.status("training") as status:
            rows = privacy_curve(data, values, {"epochs": epochs}, audit=audit, progress=status.update)
        if as_json:
            out.print(json.dumps(rows, indent=2), highlight=False)
            return
        table = Table("model", "HR@10", "NDCG@10", "epsilon", "vs non-private", "MIA AUC", "train s")
        for r in rows:
            table.add_row(r["model"], f"{r['hr@10']:.4f}", f"{r['ndcg@10']:.4f}",
                          "-" if r["epsilon"] is None else f"{r['epsilon']:.2f}", f"{r['hr@10_vs_non_private']:.2f}",
                          f"{r['mia_auc']:.3f}" if "mia_auc" in r else "-", f"{r['train_seconds']:.1f}")
        out.print(table)

    _run(body)


@app.command("audit")
def audit_command(
    sequences: Annotated[Optional[Path], typer.Option(
        help="Sequence file to audit on (default: the shop's consented events).")] = None,
    dp: Annotated[bool, typer.Option("--dp", help="Audit a model trained with DP-SGD.")] = False,
    epsilon: Annotated[float, typer.Option(min=0.01, help="With --dp: epsilon.")] = 8.0,
    epochs: Annotated[int, typer.Option(min=1, help="With --dp: DP-SGD passes over the users.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
):
    """Membership-inference attack: train on a third of the users, then tell members from held-out
    users by the model's loss on their sequences (and against a reference model). Reports the attack
    AUC with a 95% interval and the true-positive rate at 1% false positives."""
    from shopmind.cli.main import _run
    from shopmind.privacy.dp_training import PrivateBehaviourRecommender
    from shopmind.privacy.membership import membership_audit
    from shopmind.recommend.behaviour import BehaviourRecommender

    def body():
        data = _data(sequences, private=dp)  # with --dp, the data `train --dp` trains on

        def make():
            if dp:
                return PrivateBehaviourRecommender(epsilon=epsilon, epochs=epochs)
            return BehaviourRecommender(train_unused_valid=False)  # the DP model's data, as in `privacy curve`

        with console.status("training and attacking"):
            found = membership_audit(data, make)
        model = found.pop("model")
        found["privacy"] = getattr(model, "privacy_", None)
        if as_json:
            out.print(json.dumps(found, indent=2), highlight=False)
            return
        table = Table("attack", "AUC", "95% interval", "TPR at 1% FPR")
        for name in ("loss_attack", "reference_attack"):
            r = found[name]
            table.add_row(name.replace("_", " "), f"{r['auc']:.3f}", f"{r['auc_95ci'][0]:.3f}-{r['auc_95ci'][1]:.3f}",
                          f"{r['tpr_at_1pct_fpr']:.3f}")
        out.print(table)
        out.print(f"members {found['members']}, non-members {found['nonmembers']}, "
                  f"reference users {found['reference_users']}; privacy: {found['privacy'] or 'none (not DP)'}")

    _run(body)
