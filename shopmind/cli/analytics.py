"""`shopmind analytics`: differentially private reports and the privacy budget (docs/privacy.md)."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.table import Table

app = typer.Typer(help="Differentially private reports and the privacy budget.", no_args_is_help=True)


def _main():
    from shopmind.cli import main  # the shared error handling, shop and consoles of the command line

    return main


@app.command()
def report(
    metric: Annotated[str, typer.Option(help="count, sum, mean or histogram.")],
    epsilon: Annotated[float, typer.Option(help="Privacy loss to spend from the purpose's budget.")],
    purpose: Annotated[str, typer.Option(help="analytics or advertising (budgets are per purpose).")] = "analytics",
    by: Annotated[Optional[str], typer.Option(help="category, type, day, country, age_band or segment.")] = None,
    value: Annotated[Optional[str], typer.Option(help="sum/mean/histogram: price, quantity or rating.")] = None,
    lower: Annotated[Optional[float], typer.Option(help="Clamp the value from below.")] = None,
    upper: Annotated[Optional[float], typer.Option(help="Clamp the value from above.")] = None,
    bins: Annotated[int, typer.Option(help="histogram: equal-width bins between the bounds.")] = 10,
    types: Annotated[Optional[str], typer.Option(help="Comma-separated event types to keep, e.g. purchase.")] = None,
    max_groups: Annotated[int, typer.Option(help="Groups one user may contribute to.")] = 4,
    max_rows: Annotated[int, typer.Option(help="Rows one user may contribute to one group.")] = 1,
    noise: Annotated[str, typer.Option(help="laplace or gaussian.")] = "laplace",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
):
    """Release a report: a group of under 50 users passes the noisy threshold with probability below one
    in a million (docs/privacy.md); the epsilon is recorded in the ledger."""
    from shopmind.privacy.analytics import ReportQuery

    main = _main()

    def body():
        bounds = None if lower is None and upper is None else (lower, upper)
        if bounds is not None and None in bounds:
            from shopmind.exceptions import InvalidInputError

            raise InvalidInputError("bounds: give both --lower and --upper", field="bounds")
        query = ReportQuery(metric=metric, epsilon=epsilon, purpose=purpose, by=by, value=value, bounds=bounds,
                            bins=bins, types=tuple(t.strip() for t in (types or "").split(",") if t.strip()),
                            max_groups=max_groups, max_rows_per_group=max_rows, noise=noise)
        result = main._shop().analytics_report(query, main._actor()).as_dict()
        if as_json:
            main.out.print(json.dumps(result, indent=2), highlight=False)
            return
        histogram = query.metric == "histogram"
        table = Table(*(["group", "bin"] if histogram else ["group"]), metric, "users (noisy)")
        for row in result["rows"]:
            cells = [row["group"]] + ([f"[{row['bin'][0]:g}, {row['bin'][1]:g})"] if histogram else [])
            table.add_row(*cells, f"{row['value']:,.2f}" if isinstance(row["value"], float) else f"{row['value']:,}",
                          f"{row['users']:,}")
        main.out.print(table)
        main.console.print(f"spent epsilon {result['epsilon']:g}, delta {result['delta']:.2g} ({purpose}); "
                           f"groups need a noisy user count of {result['threshold']} to be shown")

    main._run(body)


@app.command()
def budget(as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False):
    """Epsilon and delta budget, spent and remaining, per purpose."""
    main = _main()

    def body():
        rows = main._shop().privacy_budget()
        if as_json:
            main.out.print(json.dumps(rows, indent=2), highlight=False)
            return
        table = Table("purpose", "releases", "epsilon spent", "epsilon left", "delta spent", "delta left")
        for r in rows:
            table.add_row(r["purpose"], str(r["releases"]), f"{r['epsilon_spent']:g} / {r['epsilon_budget']:g}",
                          f"{r['epsilon_remaining']:g}", f"{r['delta_spent']:.2g}", f"{r['delta_remaining']:.2g}")
        main.out.print(table)

    main._run(body)
