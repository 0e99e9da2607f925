"""`shopmind risk`: rules, thresholds, replaying history, training, backtests and evaluation (docs/risk.md)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

app = typer.Typer(help="Real-time risk control: rules, models, backtests.", no_args_is_help=True)

try:  # the Fraud-Detection-Handbook evaluation lives in its own module
    from shopmind.cli.risk_evaluate import evaluate as _evaluate

    app.command("evaluate")(_evaluate)
except ImportError:  # pragma: no cover - only while that module is missing
    pass


def _main():
    from shopmind.cli import main

    return main


def _ms(text: Optional[str], field: str) -> Optional[int]:
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        _main()._fail(f"{field}: expected an ISO date or time like 2026-01-31, got {text!r}", 2)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return int(when.timestamp() * 1000)


@app.command("rule")
def put_rule(
    rule_id: Annotated[str, typer.Argument(help="Rule id (a-z, 0-9, _).")],
    expression: Annotated[str, typer.Argument(help="CEL expression, e.g. 'event.amount > 500.0 && card.count_1d > 3'.")],
    action: Annotated[str, typer.Option(help="score, allow, review, block or freeze_account.")] = "score",
    weight: Annotated[float, typer.Option(help="Required for score rules: added to the score (-1..1, not 0).")] = 0.0,
    mode: Annotated[str, typer.Option(help="shadow (log only, the default) or enforce.")] = "shadow",
    description: Annotated[str, typer.Option(help="Shown as the reason when the rule fires.")] = "",
):
    """Create a rule or a new version of it. It is validated completely first; the change is audited."""
    from shopmind.risk.rules import Rule

    m = _main()
    saved = m._run(lambda: m._shop().risk.put_rule(Rule(rule_id, expression, action, weight, mode, description),
                                                   m._actor()))
    m.out.print_json(json.dumps(saved.as_dict()))


@app.command("rules")
def list_rules():
    """The active rules."""
    m = _main()
    rules = m._run(lambda: m._shop().risk.rules())
    table = Table("rule", "v", "mode", "action", "weight", "expression")
    for r in rules:
        table.add_row(r.rule_id, str(r.version), r.mode, r.action, f"{r.weight:g}", r.expression)
    m.out.print(table)


@app.command("thresholds")
def thresholds(
    review: Annotated[Optional[float], typer.Option(help="Score from which events go to review.")] = None,
    block: Annotated[Optional[float], typer.Option(help="Score from which events are blocked.")] = None,
    kind: Annotated[Optional[str], typer.Option(help="order, payment or login: set this kind's pair only.")] = None,
    shop_wide: Annotated[bool, typer.Option("--shop-wide", help="With --kind: remove the kind's pair, so it "
                                                                 "follows the shop-wide one.")] = False,
):
    """Show the thresholds, or set a pair (shop-wide, or for one event kind); every change is audited."""
    m = _main()

    def body():
        shop = m._shop()
        if shop_wide:
            if kind is None or review is not None or block is not None:
                m._fail("--shop-wide takes --kind and no --review or --block", 2)
            return shop.risk.set_thresholds(None, None, m._actor(), kind=kind)
        if review is None and block is None:
            return shop.risk.thresholds()
        if review is None or block is None:
            m._fail("give both --review and --block", 2)
        return shop.risk.set_thresholds(review, block, m._actor(), kind=kind)

    t = m._run(body)
    m.out.print_json(json.dumps(t.as_dict()))


@app.command("list")
def list_entries(
    action: Annotated[str, typer.Argument(help="add, remove or show.")],
    list_name: Annotated[Optional[str], typer.Argument(help="The list, e.g. stolen_cards (add, remove).")] = None,
    values: Annotated[Optional[list[str]], typer.Argument(help="Raw values; stored as keyed tokens only.")] = None,
    kind: Annotated[Optional[str], typer.Option(help="user, card, device, ip, email or terminal.")] = None,
    file: Annotated[Optional[Path], typer.Option(help="Values, one per line (keeps them out of shell history).")] = None,
):
    """Block and allow lists: add or remove values (audited; every API process picks it up within 5 s),
    or show each list and its size."""
    m = _main()
    if action == "show":
        lists = m._run(lambda: m._shop().risk.lists())
        table = Table("list", "kind", "entries")
        for entry in lists:
            table.add_row(entry["list_name"], entry["kind"], str(entry["entries"]))
        m.out.print(table)
        return
    if action not in ("add", "remove"):
        m._fail("action must be add, remove or show", 2)
    if not list_name or not kind:
        m._fail(f"{action} needs a list name and --kind", 2)
    given = list(values or [])
    if file is not None:
        try:
            given += [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
        except OSError as exc:
            m._fail(f"file: cannot read it ({type(exc).__name__})", 2)
        except UnicodeDecodeError as exc:
            m._fail(f"file: not UTF-8 text (byte {exc.start} cannot be decoded)", 2)

    def body():
        risk = m._shop().risk
        if action == "add":
            return {"list_name": list_name, "added": risk.add_to_list(list_name, kind, given, m._actor())}
        return {"list_name": list_name, "removed": risk.remove_from_list(list_name, kind, given, m._actor())}

    m.out.print_json(json.dumps(m._run(body)))


@app.command()
def replay(
    label_delay_days: Annotated[float, typer.Option(help="Assumed delay of stored fraud labels.")] = 7.0,
    behaviour_as_of: Annotated[Optional[str], typer.Option(
        help="First train a behaviour model on the events before this time (an ISO date, or 'auto': when a "
             "third of the stored orders and payments had happened, skipped if a version already predates "
             "it, if no behaviour model serves or if the serving one is DP). Replayed orders get the "
             "behaviour feature only from a version trained before them, and only while a behaviour model "
             "serves.")] = None,
    behaviour_budget: Annotated[float, typer.Option(help="Training budget of that model, seconds.", min=1)] = 60.0,
):
    """Replay stored orders and payments through the engine into the decision log (to train a first model)."""
    from shopmind.exceptions import InvalidInputError
    from shopmind.risk.backtest import behaviour_versions_as_of
    from shopmind.risk.training import checked_label_delay, replay_as_of_time, replay_history
    from shopmind.training.pipeline import as_of_training_refused, train_behaviour_as_of

    m = _main()
    given = None if behaviour_as_of in (None, "auto") else _ms(behaviour_as_of, "--behaviour-as-of")

    def body():
        checked_label_delay(label_delay_days)  # before any training: a bad delay fails in a second, not minutes
        shop = m._shop()
        trained: dict | None = None
        if behaviour_as_of is not None:
            until = given if given is not None else replay_as_of_time(shop)
            why_not = as_of_training_refused(shop)
            if why_not is not None and given is not None:
                raise InvalidInputError(f"--behaviour-as-of: {why_not}", field="behaviour_as_of")
            if why_not is not None:
                trained = {"skipped": why_not}
            elif given is not None or not any(t < until for t, _ in behaviour_versions_as_of(shop.registry)):
                try:
                    trained = train_behaviour_as_of(shop, until, m._actor(), behaviour_budget)
                except InvalidInputError as exc:
                    if given is not None:
                        raise
                    trained = {"skipped": str(exc)}  # auto: replay without it rather than not at all
        return {**replay_history(shop, label_delay_days), "behaviour_trained_as_of": trained}

    m.out.print_json(json.dumps(m._run(body)))


@app.command()
def train(
    cutoff: Annotated[Optional[str], typer.Option(help="Train on what was known at this time (default: now).")] = None,
    label_delay_days: Annotated[float, typer.Option(help="Events younger than this without a label are left "
                                                         "out, not assumed legitimate.")] = 7.0,
):
    """Train the risk model (LightGBM) from the decision log and its labels, and promote it."""
    from shopmind.risk.training import train_risk_model

    m = _main()
    cut = _ms(cutoff, "cutoff")
    m.out.print_json(json.dumps(m._run(lambda: train_risk_model(m._shop(), m._actor(), cut, label_delay_days))))


@app.command()
def backtest(
    since: Annotated[Optional[str], typer.Option(help="First day reported (earlier days only warm the windows).")] = None,
    until: Annotated[Optional[str], typer.Option(help="Last time replayed.")] = None,
    model_version: Annotated[Optional[str], typer.Option(help="Risk model version (default: the promoted one).")] = None,
    review_cost: Annotated[float, typer.Option(min=0, max=1e9, help="Cost of one manual review.")] = 3.0,
    margin: Annotated[float, typer.Option(min=0, max=1, help="Share of a good order's amount lost when it is "
                                                             "blocked.")] = 0.25,
):
    """Replay stored history through the current rules and a model version; outcomes, cost and the
    thresholds that would have cost least. Writes nothing."""
    from shopmind.risk.backtest import CostModel, backtest as run

    m = _main()
    since_ms, until_ms = _ms(since, "since") or 0, _ms(until, "until")
    result = m._run(lambda: run(m._shop(), since_ms, until_ms, model_version,
                                CostModel(review_cost=review_cost, margin=margin)))
    m.out.print_json(json.dumps(result))


@app.command()
def freeze(user_id: str, reason: Annotated[str, typer.Option()] = ""):
    """Freeze an account: every later decision for it is freeze_account (audited)."""
    m = _main()
    m._run(lambda: m._shop().risk.freeze(user_id, m._actor(), reason))
    m.out.print_json(json.dumps({"frozen": True}))  # the raw id is not repeated


@app.command()
def unfreeze(user_id: str, reason: Annotated[str, typer.Option()] = ""):
    """Unfreeze an account (audited)."""
    m = _main()
    m._run(lambda: m._shop().risk.unfreeze(user_id, m._actor(), reason))
    m.out.print_json(json.dumps({"frozen": False}))


@app.command()
def alerts(
    webhook: Annotated[Optional[list[str]], typer.Option(help="Webhook URL (repeatable); default: the "
                                                              "risk_alert_webhooks setting.")] = None,
    window_minutes: Annotated[float, typer.Option(help="Recent window compared with the day before it.")] = 60,
    ratio: Annotated[float, typer.Option(help="Alert when a rate is this many times its baseline.")] = 3.0,
    min_hits: Annotated[int, typer.Option(help="...and at least this many hits in the window.")] = 10,
):
    """Check rule hit rates and the fraud rate for jumps, and deliver pending alerts (retried with backoff)."""
    import math

    from shopmind.exceptions import InvalidInputError
    from shopmind.risk import alerts as risk_alerts

    m = _main()

    def body():
        # checked before the shop opens, naming the options (AlertPolicy names its own fields)
        if min_hits < 1:
            raise InvalidInputError(f"--min-hits must be at least 1, got {min_hits}", field="min_hits")
        if not (math.isfinite(ratio) and ratio > 0):
            raise InvalidInputError(f"--ratio must be a number above 0, got {ratio}", field="ratio")
        if not (math.isfinite(window_minutes) and window_minutes * 60_000 >= 1):
            raise InvalidInputError(f"--window-minutes must be a positive number of minutes, got {window_minutes}",
                                    field="window_minutes")
        shop = m._shop()
        policy = risk_alerts.AlertPolicy(window_ms=int(window_minutes * 60_000), ratio=ratio, min_hits=min_hits)
        raised = risk_alerts.check(shop.store, policy)
        hooks = list(webhook or shop.settings.risk_alert_webhooks)
        delivery = risk_alerts.deliver(shop.store, hooks, policy) if hooks else {"delivered": 0, "failed": 0, "due": 0}
        return {"raised": raised, "delivery": delivery, "webhooks": len(hooks)}

    m.out.print_json(json.dumps(m._run(body)))
