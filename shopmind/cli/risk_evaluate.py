"""`shopmind risk evaluate`: fraud-detection quality on labelled card transactions (handbook protocol)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from shopmind.exceptions import InvalidInputError

out = Console()
console = Console(stderr=True)


def _fmt(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def evaluate(
    transactions: Annotated[Path, typer.Option(help="CSV or Parquet file of labelled transactions: TRANSACTION_ID, "
                                                    "TX_DATETIME, CUSTOMER_ID, TERMINAL_ID, TX_AMOUNT, TX_FRAUD.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    train_days: Annotated[int, typer.Option(min=1, help="Days of training.")] = 7,
    delay_days: Annotated[int, typer.Option(min=1, help="Days between train and test whose labels are not yet "
                                                        "known; also the label delay of the features (at least 1: "
                                                        "at 0 a transaction would read its own label).")] = 7,
    test_days: Annotated[int, typer.Option(min=1, help="Days of testing: the last days of the file.")] = 7,
    top_k: Annotated[int, typer.Option(min=1, help="k of card precision@k (cards per day).")] = 100,
    seed: Annotated[int, typer.Option(help="Random seed of the model.")] = 0,
    scores_out: Annotated[Optional[Path], typer.Option(help="Also write TRANSACTION_ID,score (CSV) for every "
                                                            "transaction of the test window.")] = None,
):
    """Split by time as the Fraud-Detection-Handbook does (train, label-delay gap, test; earlier days are
    feature history), train the default pipeline (point-in-time features + LightGBM) and print average
    precision, card precision@k and ROC AUC of the test window."""
    from shopmind.cli.main import _run
    from shopmind.risk.handbook import run_evaluation

    def body():
        if scores_out is not None and scores_out.exists() and scores_out.is_dir():
            raise InvalidInputError(f"{scores_out}: is a folder", field="scores_out")
        with console.status("evaluating"):
            result = run_evaluation(transactions, train_days=train_days, delay_days=delay_days,
                                    test_days=test_days, top_k=top_k, seed=seed)
        report = result.report
        if scores_out is not None:
            try:
                result.scores.select("TRANSACTION_ID", "score").write_csv(scores_out)
            except OSError as exc:
                raise InvalidInputError(f"{scores_out}: cannot be written ({exc.strerror})",
                                        field="scores_out") from exc
            report["scores_out"] = str(scores_out)
        if json_out:
            # written as is: a console wraps lines at the terminal's width, inside strings too (a long
            # --scores-out path), which other programs would not read as JSON
            sys.stdout.write(json.dumps(_json_safe(report), indent=2) + "\n")
            return
        metrics, counts, windows = report["metrics"], report["counts"], report["windows"]
        table = Table("metric", "value", title="fraud detection (handbook protocol, LightGBM)")
        for name, value in metrics.items():
            table.add_row(name, _fmt(value))
        table.add_row("train", f"{windows['train_start']} .. {windows['train_end']}: {counts['train']:,} tx, "
                               f"{counts['train_frauds']:,} fraud")
        table.add_row("test", f"{windows['test_start']} .. {windows['test_end']}: {counts['test']:,} tx, "
                              f"{counts['test_frauds']:,} fraud ({counts['removed_known_compromised']:,} tx of "
                              "known-compromised cards left out)")
        table.add_row("features", str(len(report["feature_names"])))
        table.add_row("wall time", f"{report['wall_s']['total']:.1f} s")
        out.print(table)

    _run(body)
