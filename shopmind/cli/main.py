"""The `shopmind` command line. Each command is a thin layer over `shopmind.Shop`.

Bad input exits with code 2 and a one-line message naming the field; nothing is changed.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from shopmind.cli import analytics as analytics_cli
from shopmind.cli import privacy as privacy_cli
from shopmind.cli import risk as risk_cli
from shopmind.exceptions import AuthError, ConfigError, InvalidInputError, NotFoundError, ShopmindError

app = typer.Typer(help="shopmind: a self-hosted, privacy-first AI engine for e-commerce.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
console = Console(stderr=True, soft_wrap=True)  # a message names paths whole, never broken
out = Console(soft_wrap=True)  # never wrap: --json output must stay parseable at any width

IMPORT_ORDER = ("items", "users", "events", "orders", "payments")


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _fail(message: str, code: int) -> None:
    console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def _run(fn):
    """Run a command body, mapping shopmind errors to exit codes (2 = bad input or config)."""
    try:
        return fn()
    except (InvalidInputError, ConfigError) as exc:
        _fail(str(exc), 2)
    except NotFoundError as exc:
        _fail(str(exc), 1)
    except AuthError as exc:
        _fail(str(exc), 2)
    except ShopmindError as exc:
        _fail(f"{type(exc).__name__}: {exc}", 1)


@contextlib.contextmanager
def _private_file(path: Path, option: str):
    """An owner-only file for writing, or exit 2 naming the option when the path cannot be written. It is
    written beside `path` and renamed into place once the body succeeds: a body that fails leaves what
    was there (an export of an unknown user deleted an existing file), and a file that was there, 0644
    say, is replaced by an owner-only one rather than rewritten with its old mode."""
    import tempfile

    if path.is_dir():
        raise InvalidInputError(f"--{option} {path}: is a folder; name a file", field=option)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mode 0600
    except OSError as exc:
        raise InvalidInputError(f"--{option} {path}: cannot write there ({exc.strerror})", field=option) from None
    try:
        with os.fdopen(fd, "w") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _settings():
    from shopmind.config import load_settings

    return load_settings()


def _shop(finishing_rotation: bool = False):
    from shopmind.shop import Shop

    return Shop.open(_settings(), finishing_rotation=finishing_rotation)


@app.callback()
def main(home: Annotated[Optional[Path], typer.Option(help="Data folder (default .shopmind or SHOPMIND_HOME).")] = None):
    if home is not None:
        os.environ["SHOPMIND_HOME"] = str(home)


def _holds_admin_key(shop, target: Path) -> bool:
    """Whether `target` holds a working admin key: a file left empty or partial by an `init` that was
    killed after the key was created (its only copy lost) does not count, so a rerun writes a new one."""
    from shopmind.auth import KeyVerifier, Scope
    from shopmind.exceptions import ShopmindError

    try:
        presented = target.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return False
    try:
        return Scope.admin in KeyVerifier(shop.store).verify(presented).scopes
    except ShopmindError:
        return False


@app.command()
def init(
    admin_key_file: Annotated[Optional[Path], typer.Option(help="Where to write the first admin key "
                                                              "(default <home>/admin.key).")] = None,
):
    """Create the data folder, the key file and the database, and a first admin API key."""
    from shopmind.auth import Scope, create_key
    from shopmind.shop import Shop

    def body():
        shop, created = Shop.init(_settings())
        console.print("keys: from SHOPMIND_KEYRING" if shop.settings.keyring else
                      f"keys: {'created' if created else 'kept existing'} ({shop.settings.key_file})")
        console.print(f"database: {shop.store.url.render_as_string(hide_password=True)}")
        _warn_if_others_can_read(shop.store.url, shop.settings.home)
        target = admin_key_file or shop.settings.home / "admin.key"
        if _holds_admin_key(shop, target):
            console.print(f"admin key: kept existing ({target})")
            return
        with _private_file(target, "admin-key-file") as fh:  # opened first: a path that fails creates no key
            fh.write(create_key(shop.store, "admin (shopmind init)", frozenset({Scope.admin})) + "\n")
        console.print(f"admin key written to {target} (owner-only; keep it there or in a secret store)")

    _run(body)


def _warn_if_others_can_read(url, home: Path) -> None:
    """A new home folder and SQLite database are created owner-only; ones made by a version before
    2026-12-07 were made with the umask's mode (often 0755 and 0644), and `init` keeps an existing mode
    (its owner may have chosen it), so it says so: the database holds pseudonymised behaviour, decisions
    and the audit log, the home's model files the trained users' pseudonyms."""
    paths = [(home, "the home folder", "700")]
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        paths.append((Path(url.database), "the database file", "600"))
    for path, what, fix in paths:
        try:
            mode = path.stat().st_mode & 0o777
        except OSError:  # a URI-style SQLite name (file:x?uri=true) is not a path to look at
            continue
        if mode & 0o077:
            console.print(f"warning: {what} is open to others than its owner (mode {mode:04o}): "
                          f"`chmod {fix} {path}` unless that is intended")


@app.command()
def generate(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the shop's files into.")] = Path("shop-data"),
    users: Annotated[int, typer.Option(min=100, max=1_000_000, help="Number of users.")] = 5000,
    days: Annotated[int, typer.Option(min=1, max=730, help="Days of history.")] = 60,
    seed: Annotated[int, typer.Option(min=0, max=2**63 - 1, help="Random seed (same seed, same shop).")] = 0,
    fmt: Annotated[str, typer.Option("--format", help="csv, jsonl or parquet.")] = "parquet",
):
    """Generate a realistic synthetic shop (catalog, users, events, orders, payments, ground truth).
    Written chunk by chunk, so memory stays bounded up to a million users."""
    from shopmind.events.files import count_rows
    from shopmind.synth import ShopConfig, stream_shop

    if fmt not in {"csv", "jsonl", "parquet"}:
        _fail(f"--format must be csv, jsonl or parquet, got {fmt!r}", 2)
    if out_dir.exists() and not out_dir.is_dir():
        _fail(f"--out {out_dir} is a file, not a folder", 2)
    with console.status(f"generating {users:,} users over {days} days"):
        paths = stream_shop(out_dir, ShopConfig(n_users=users, days=days, seed=seed), fmt=fmt)
    table = Table("file", "rows")
    for path in paths.values():
        table.add_row(str(path), f"{count_rows(path):,}")
    out.print(table)


@app.command("import")
def import_(
    paths: Annotated[list[Path], typer.Argument(help="Files (.csv, .jsonl, .parquet) or a folder from `generate`.")],
    kind: Annotated[Optional[str], typer.Option(help="items, users, events, orders or payments "
                                                     "(default: from the file name).")] = None,
):
    """Import files of items, users, events, orders or payments, all in one transaction: every row of
    every file is written, or (one bad row anywhere) nothing is."""
    from shopmind.events.files import FORMATS

    def plan() -> list[tuple[str, Path]]:
        jobs = []
        for path in paths:
            if path.is_dir():
                if kind is not None:
                    raise InvalidInputError(f"--kind applies to files, not to the folder {path} (whose files are "
                                            "read by their names)", field="kind")
                entries = sorted(path.iterdir())
                for name in IMPORT_ORDER:
                    found = [p for p in entries if p.stem == name and p.suffix.lower() in FORMATS]
                    if len(found) > 1:  # importing one and passing over the other would lose rows unsaid
                        raise InvalidInputError(f"{path}: {' and '.join(p.name for p in found)} both hold {name}; "
                                                "import them one by one", field="paths")
                    unreadable = [p.name for p in found if not p.is_file()]  # a folder, a dangling link
                    if unreadable:
                        raise InvalidInputError(f"{path}: {', '.join(unreadable)} is not a readable file", field="paths")
                    jobs.extend((name, p) for p in found)
                # a file named for a kind that this does not read (Orders.csv, events.csv.gz, payments.json)
                # would lose its rows unsaid; other files (README, generate's truth.parquet) are not data
                picked = {p for _, p in jobs}
                passed = [p.name for p in entries if p not in picked
                          and p.name.split(".")[0].lower() in IMPORT_ORDER]
                if passed:
                    raise InvalidInputError(f"{path}: {', '.join(passed)} would not be read (a folder imports "
                                            f"{', '.join(IMPORT_ORDER)} as lower-case <kind>.csv, .jsonl or "
                                            ".parquet); rename or convert them, or import files one by one",
                                            field="paths")
                continue
            if not path.exists():
                raise InvalidInputError(f"{path}: no such file or folder", field="paths")
            name = kind or path.stem
            if kind is not None and kind not in IMPORT_ORDER:
                raise InvalidInputError(f"--kind must be one of {', '.join(IMPORT_ORDER)}, got {kind!r}", field="kind")
            if name not in IMPORT_ORDER:
                raise InvalidInputError(f"{path.name}: cannot tell what it holds; pass --kind "
                                        f"({', '.join(IMPORT_ORDER)})", field="kind")
            jobs.append((name, path))
        if not jobs:
            raise InvalidInputError("nothing to import: no items/users/events/orders/payments files found", field="paths")
        return jobs

    def body():
        jobs = plan()
        shop = _shop()
        from shopmind.events.files import count_rows

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=False) as progress:
            tasks = [progress.add_task(f"{name:<8} {path.name}", total=count_rows(path), start=False)
                     for name, path in jobs]

            def report(task):  # a file's clock starts when its rows start (0 rows first)
                def advance(n: int) -> None:
                    if n == 0:
                        progress.start_task(task)
                    progress.advance(task, n)
                return advance

            results = shop.import_files([(path, name) for name, path in jobs], _actor(), [report(t) for t in tasks])
        table = Table("kind", "received", "written", "duplicates", "dropped (erased)")
        for r in results:
            table.add_row(r.kind, f"{r.received:,}", f"{r.written:,}", f"{r.duplicates:,}", f"{r.dropped_erased:,}")
        out.print(table)

    _run(body)


@app.command()
def train(
    budget: Annotated[Optional[float], typer.Option(min=1, help="Stop the behaviour model's epochs after this many "
                                                          "seconds (the best epoch so far is kept); choosing the "
                                                          "blend and the promotion gate take some more.")] = None,
    schedule: Annotated[Optional[str], typer.Option(help="Retrain every interval, e.g. 30m, 6h, 1d (runs until "
                                                            "stopped).")] = None,
    force: Annotated[bool, typer.Option(help="Promote the new behaviour model even if it scores lower.")] = False,
    dp: Annotated[bool, typer.Option("--dp", help="Train the behaviour model with user-level DP-SGD.")] = False,
    epsilon: Annotated[float, typer.Option(min=0.01, help="With --dp: the privacy budget epsilon.")] = 8.0,
    delta: Annotated[Optional[float], typer.Option(help="With --dp: delta (default 1 / number of users).")] = None,
    dp_epochs: Annotated[int, typer.Option(min=1, help="With --dp: passes over the users.")] = 20,
    max_grad_norm: Annotated[float, typer.Option(min=1e-6, help="With --dp: per-user clipping bound.")] = 1.0,
    secure_mode: Annotated[bool, typer.Option(help="With --dp: cryptographically secure noise (slower).")] = False,
    content_only: Annotated[bool, typer.Option(help="With --dp: items are their title embeddings alone (no noisy "
                                                    "per-item vectors; needs the 'text' extra).")] = False,
    pairs_share: Annotated[Optional[float], typer.Option(min=0.0, max=0.99, help="With --dp: the share of epsilon "
                                                         "that the release of item pairs would take alone (default "
                                                         "0.75; 0: the network alone, as --secure-mode needs).")] = None,
):
    """Train on consented data: the trending fallback and the behaviour model (promoted only if it is
    not worse than the current one on the same data)."""
    import time

    interval = _parse_interval(schedule) if schedule else None
    for name, value in (("--budget", budget), ("--epsilon", epsilon), ("--max-grad-norm", max_grad_norm),
                        ("--pairs-share", pairs_share)):
        if value is not None and not math.isfinite(value):
            _fail(f"{name} must be a finite number", 2)
    if delta is not None and not 0 < delta < 1:
        _fail("--delta must be between 0 and 1", 2)
    if (content_only or pairs_share is not None) and not dp:
        _fail("--content-only and --pairs-share apply to --dp training only", 2)
    if dp and budget is not None:  # the accountant planned the noise for every epoch: none may be cut
        _fail("--budget does not apply to --dp training, which runs all its --dp-epochs (the noise is "
              "calibrated to them); choose fewer epochs instead", 2)
    if dp and secure_mode and pairs_share != 0:
        _fail("--secure-mode needs --pairs-share 0: the item-pair release has no cryptographic noise generator", 2)
    privacy = {"epsilon": epsilon, "delta": delta, "epochs": dp_epochs, "max_grad_norm": max_grad_norm,
               "secure_mode": secure_mode, "content_only": content_only,
               **({} if pairs_share is None else {"cooccurrence_share": pairs_share})} if dp else None

    def once():
        shop = _shop()
        with console.status("training"):
            result = shop.train(_actor(), time_budget_s=budget, force_promote=force, dp=privacy)
        out.print(json.dumps(result, indent=2), highlight=False)
        shop.close()

    if interval is None:
        _run(once)
        return
    while True:  # a plain loop: cron or systemd timers can run `shopmind train` instead
        try:
            _run(once)
        except typer.Exit as exc:
            if exc.exit_code == 2:  # bad input or configuration: the next run would fail the same way
                raise
            # the database unreachable: a scheduler keeps going, as a cron job would
            console.print(f"training failed (exit {exc.exit_code}); trying again at the next interval")
        console.print(f"next training in {schedule}")
        time.sleep(interval)


def _parse_interval(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        value, unit = float(text[:-1]), units[text[-1]]
    except (ValueError, KeyError, IndexError):
        _fail(f"--schedule must look like 30m, 6h or 1d, got {text!r}", 2)
    if not math.isfinite(value) or value <= 0 or value * unit > 366 * 86400:
        _fail("--schedule must be a positive number of s, m, h or d, at most a year", 2)
    return value * unit


models_app = typer.Typer(help="Inspect, promote and roll back model versions.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(analytics_cli.app, name="analytics")
app.add_typer(privacy_cli.app, name="privacy")
app.add_typer(risk_cli.app, name="risk")


@models_app.command("list")
def models_list(kind: Annotated[str, typer.Argument(help="behaviour, popularity or risk")] = "behaviour"):
    """Versions with their cards; the current one is marked."""

    def body():
        shop = _shop()
        current = shop.registry.current_version(kind)
        table = Table("version", "current", "train s", "metrics")
        for card in shop.registry.versions(kind):
            table.add_row(card["version"], "*" if card["version"] == current else "",
                          str(card.get("train_seconds", "")), json.dumps(card.get("metrics", {})))
        out.print(table)

    _run(body)


@models_app.command("promote")
def models_promote(kind: Annotated[str, typer.Argument()], version: Annotated[str, typer.Argument()]):
    """Make a version current (the service picks it up on its next request)."""

    def body():
        _shop().registry.promote(kind, version)
        out.print(f"{kind}: {version} is current")

    _run(body)


@models_app.command("rollback")
def models_rollback(kind: Annotated[str, typer.Argument(help="behaviour, popularity or risk")] = "behaviour"):
    """Go back to the previously promoted version."""
    _run(lambda: out.print(f"{kind}: {_shop().registry.rollback(kind)} is current"))


@app.command()
def evaluate(
    sequences: Annotated[Path, typer.Option(help="File with one line per user: `user item item ...` in time order.")],
    models: Annotated[str, typer.Option(help="Comma-separated: popularity, itemknn, als, behaviour, blend (behaviour + item kNN).")] =
    "popularity,itemknn,als,behaviour",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
):
    """Train each model's default configuration on a sequence file and report HR@10, NDCG@10, MRR and
    coverage under time-ordered leave-one-out with full ranking (seen items excluded)."""
    from shopmind.evaluation import load_sequences
    from shopmind.evaluation.harness import evaluate_models

    def body():
        data = load_sequences(sequences)
        names = [m.strip() for m in models.split(",") if m.strip()]
        with console.status("evaluating") as status:
            rows = evaluate_models(data, names, progress=lambda name: status.update(f"training {name}"))
        if as_json:
            out.print(json.dumps(rows, indent=2), highlight=False)
            return
        table = Table("model", "HR@10", "NDCG@10", "MRR", "coverage@10", "train s")
        for r in rows:
            table.add_row(r["model"], f"{r['hr@10']:.4f}", f"{r['ndcg@10']:.4f}", f"{r['mrr']:.4f}",
                          f"{r['coverage@10']:.3f}", f"{r['train_seconds']:.1f}")
        out.print(table)

    _run(body)


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="Bind address (default from settings: 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (default from settings: 8000).")] = None,
    workers: Annotated[Optional[int], typer.Option(
        min=1, max=64, help="API processes (default from settings: 1); more than one needs a redis:// cache.")] = None,
):
    """Serve the HTTP API, /docs and the dashboard."""
    # Serving runs tiny tensor operations, one request per thread: OpenMP threads inside torch,
    # faiss and OpenBLAS only spin-wait there (measured: 10 ms of CPU per request with 2 OpenMP
    # threads, under 2 ms with one). Those libraries read this when they load, so it comes first.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # The batcher lends a request that arrives alone more OpenMP threads (recommend/batching.py); GNU
    # OpenMP's threads then spin after each region on cores the event loop needs. Passive: they sleep
    # (p99 of first visits at 25/s: 54 -> 18 ms in one paired run, docs/benchmarks.md).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import uvicorn

    from shopmind.api.main import create_app

    def body():
        settings = _settings()
        n = workers or settings.workers
        if n > 1 and not settings.cache_url.startswith("redis"):
            # Each process would keep its own copy of users' recent events and consent, and an event
            # ingested by one process would not reach the others' copies.
            raise InvalidInputError("--workers above 1 needs a cache shared by the processes: set "
                                    "SHOPMIND_CACHE_URL=redis://host:port/db", field="workers")
        _configure_logging(settings)
        # Raw paths carry user ids: uvicorn's access log is off; shopmind logs route templates instead.
        options = dict(host=host or settings.host, port=port or settings.port, access_log=False,
                       log_level=settings.log_level.lower())
        if n == 1:
            uvicorn.run(create_app(settings), **options)
        else:  # worker processes build their own app from the same environment
            uvicorn.run("shopmind.api.main:create_app", factory=True, workers=n, **options)

    _run(body)


def _configure_logging(settings) -> None:
    from shopmind.config import private_dir

    log_file = private_dir(settings.home) / "shopmind.log"
    os.close(os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))  # owner-only when new
    handlers = [logging.StreamHandler(sys.stderr), logging.FileHandler(log_file)]
    logging.basicConfig(level=settings.log_level, handlers=handlers,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # migration chatter at every start
    # httpx logs every request's full URL at INFO, and alert webhook URLs carry credentials (tokens in
    # the path or query, user:password@)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


@app.command("erase-user")
def erase_user(user_id: Annotated[str, typer.Argument(help="The shop's raw user id.")]):
    """Erase a user from every store and model lineage; prints the receipt (no raw id in it)."""
    _run(lambda: out.print(json.dumps(_shop().erase_user(user_id, _actor()).as_dict(), indent=2)))


@app.command("export-user")
def export_user(
    user_id: Annotated[str, typer.Argument(help="The shop's raw user id.")],
    output: Annotated[Optional[Path], typer.Option("--out", help="Write to this file instead of stdout.")] = None,
):
    """Everything held about a user, as JSON (data-subject access request)."""

    def body():
        # the file is opened first: a path that cannot be written fails before the export is made and audited
        with _private_file(output, "out") if output else contextlib.nullcontext() as fh:
            text = json.dumps(_shop().export_user(user_id, _actor()), indent=2, default=str)
            if fh is None:
                out.print(text, highlight=False)
                return
            fh.write(text)
        console.print(f"written to {output}")

    _run(body)


@app.command("rotate-keys")
def rotate_keys(
    kind: Annotated[str, typer.Argument(help="'encryption' or 'pseudonym'.")],
    retire: Annotated[bool, typer.Option(help="Encryption: drop old keys that no longer seal anything.")] = False,
):
    """Rotate a key. Stop the service first; start it again afterwards. An interrupted rotation is
    finished by running the same command again (nothing else starts until then)."""
    _run(lambda: out.print(json.dumps(_shop(finishing_rotation=True).rotate_keys(kind, _actor(), retire=retire),
                                      indent=2)))


@app.command()
def stats():
    """Row counts and events by type."""
    _run(lambda: out.print(json.dumps(_shop().stats(), indent=2)))


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="What the key is for.")],
    scopes: Annotated[str, typer.Option(help="Comma-separated: admin, ingest, recommend, analyst, risk, "
                                             "risk_admin.")],
):
    """Create an API key; it is printed once."""
    from shopmind.auth import create_key, parse_scopes

    _run(lambda: out.print(create_key(_shop().store, name, parse_scopes(scopes))))


@keys_app.command("list")
def keys_list():
    """List API keys (ids, names, scopes; never the secrets)."""
    from shopmind.auth import list_keys

    def body():
        table = Table("key id", "name", "scopes", "revoked")
        for k in list_keys(_shop().store):
            table.add_row(k["key_id"], k["name"], k["scopes"], str(k["revoked"]))
        out.print(table)

    _run(body)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key id (the part after sm_).")]):
    """Revoke an API key."""
    from shopmind.auth import revoke_key

    def body():
        if not revoke_key(_shop().store, key_id):
            raise NotFoundError(f"no key with id {key_id!r}")
        out.print(f"revoked {key_id}")

    _run(body)


if __name__ == "__main__":  # pragma: no cover
    app()
