"""The command line end to end: init, generate, import, train, export, erase; exit 2 on bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shopmind.cli.main import app
from shopmind.exceptions import BatchValidationError

runner = CliRunner()


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SHOPMIND_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SHOPMIND_DATABASE_URL", raising=False)
    return tmp_path / "home"


def run(*args: str):
    return runner.invoke(app, list(args))


def test_full_cycle(home, tmp_path):
    r = run("init")
    assert r.exit_code == 0, r.output
    admin_key = (home / "admin.key").read_text().strip()
    assert admin_key.startswith("sm_") and (home / "admin.key").stat().st_mode & 0o777 == 0o600
    data = tmp_path / "data"
    r = run("generate", "--out", str(data), "--users", "300", "--days", "10", "--format", "csv")
    assert r.exit_code == 0, r.output
    r = run("import", str(data))
    assert r.exit_code == 0, r.output
    stats = json.loads(run("stats").stdout)
    assert stats["rows"]["events"] > 1000 and stats["rows"]["users"] == 300
    r = run("import", str(data / "events.csv"))  # again: everything is a duplicate
    assert r.exit_code == 0 and json.loads(run("stats").stdout)["rows"]["events"] == stats["rows"]["events"]
    r = run("train", "--budget", "2")
    assert r.exit_code == 0, r.output
    trained = json.loads(r.stdout)
    assert trained["popularity"]["promoted"] and trained["behaviour"]["promoted"]  # first model: no champion
    assert "u0000001" not in r.stdout
    r = run("export-user", "u0000001")
    assert r.exit_code == 0, r.output
    exported = json.loads(r.stdout)
    assert exported["user_id"] == "u0000001" and "@" in exported["profile"]["email"]
    r = run("erase-user", "u0000001")
    assert r.exit_code == 0, r.output
    assert "u0000001" not in r.stdout and json.loads(r.stdout)["removed"]["database.users"] == 1
    assert run("export-user", "u0000001").exit_code == 1


def test_bad_file_exits_2_and_writes_nothing(home, tmp_path):
    assert run("init").exit_code == 0
    bad = tmp_path / "events.jsonl"
    good = {"event_id": "e1", "user_id": "u1", "type": "view", "item_id": "i1", "ts": "2026-01-05T10:00:00Z"}
    rows = [good, {**good, "event_id": "e2", "type": "fly"}, {**good, "event_id": "e3", "ts": "yesterday"}]
    bad.write_text("\n".join(json.dumps(r) for r in rows))
    r = run("import", str(bad))
    assert r.exit_code == 2
    assert "line 2: type" in r.output and "line 3: ts" in r.output  # lines, as an editor counts them
    assert json.loads(run("stats").stdout)["rows"]["events"] == 0


def test_a_folder_with_one_bad_file_writes_nothing_and_names_it(home, tmp_path):
    """A folder is one import: its items and users must not stay behind when its events file is bad."""
    assert run("init").exit_code == 0
    data = tmp_path / "data"
    data.mkdir()
    (data / "items.jsonl").write_text(json.dumps({"item_id": "i1", "title": "Mug"}) + "\n")
    (data / "users.jsonl").write_text(json.dumps({"user_id": "u1"}) + "\n")
    good = {"event_id": "e1", "user_id": "u1", "type": "view", "item_id": "i1", "ts": "2026-01-05T10:00:00Z"}
    (data / "events.jsonl").write_text(json.dumps(good) + "\n" + json.dumps({**good, "event_id": "e2", "type": "fly"}))
    r = run("import", str(data))
    assert r.exit_code == 2, (r.output, r.exception)
    assert "events.jsonl: 1 invalid line(s)" in r.output and "line 2: type" in r.output
    rows = json.loads(run("stats").stdout)["rows"]
    assert (rows["items"], rows["users"], rows["events"]) == (0, 0, 0)
    (data / "events.jsonl").write_text(json.dumps(good) + "\n")  # fixed: all three files go in
    assert run("import", str(data)).exit_code == 0
    rows = json.loads(run("stats").stdout)["rows"]
    assert (rows["items"], rows["users"], rows["events"]) == (1, 1, 1)


def test_a_bad_last_row_writes_nothing_across_chunks(shop, tmp_path):
    """A file is one transaction even when it spans many chunks: rows of chunks that were valid and already
    handed to the database are not committed when a later chunk has a bad row."""
    good = {"event_id": "e1", "user_id": "u1", "type": "view", "item_id": "i1", "ts": "2026-01-05T10:00:00Z"}
    rows = [good, {**good, "event_id": "e2", "user_id": "u2"}, {**good, "event_id": "e3", "type": "fly"}]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(BatchValidationError) as caught:
        shop.import_file(path, "events", "test", chunk=1)
    assert [(e.index, e.field) for e in caught.value.errors] == [(3, "type")]  # the file's third line
    assert shop.store.count("events") == 0
    assert shop.store.count("identity_vault") == 0


def test_a_nul_character_in_a_file_exits_2_on_every_backend(home, tmp_path, monkeypatch, database_url):
    """PostgreSQL cannot store NUL: the import died with psycopg.DataError (exit 1); SQLite stored it."""
    monkeypatch.setenv("SHOPMIND_DATABASE_URL", database_url)
    assert run("init").exit_code == 0
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"item_id": "i1", "title": "Mug"}) + "\n"
                     + json.dumps({"item_id": "i2", "title": "Mu\u0000g"}) + "\n")
    r = run("import", str(items))
    assert r.exit_code == 2, (r.output, r.exception)
    assert "line 2: title" in r.output and "NUL" in r.output
    assert json.loads(run("stats").stdout)["rows"]["items"] == 0


def test_a_file_that_is_not_utf8_exits_2_naming_file_and_line(home, tmp_path):
    assert run("init").exit_code == 0
    good = {"event_id": "e1", "user_id": "u1", "type": "view", "item_id": "i1", "ts": "2026-01-05T10:00:00Z"}
    bad = tmp_path / "events.jsonl"
    bad.write_bytes(json.dumps(good).encode() + b"\n" + b'{"event_id": "e\xff2"}\n')
    r = run("import", str(bad))
    assert r.exit_code == 2, (r.output, r.exception)
    assert "events.jsonl" in r.output and "line 2" in r.output and "UTF-8" in r.output
    assert json.loads(run("stats").stdout)["rows"]["events"] == 0


def test_unusable_arguments_exit_2(home, tmp_path):
    assert run("init").exit_code == 0
    (tmp_path / "mystery.csv").write_text("a,b\n1,2\n")
    assert run("import", str(tmp_path / "mystery.csv")).exit_code == 2
    assert run("import", str(tmp_path / "missing.parquet"), "--kind", "events").exit_code == 2
    assert run("keys", "create", "--name", "x", "--scopes", "root").exit_code == 2
    assert run("rotate-keys", "everything").exit_code == 2
    assert run("generate", "--users", "5").exit_code == 2


def test_missing_key_file_is_a_clear_error(home):
    r = run("stats")
    assert r.exit_code == 2 and "shopmind init" in r.output


def test_every_command_has_help():
    for command in ("init", "generate", "import", "train", "serve", "erase-user", "export-user", "rotate-keys",
                    "stats", "keys"):
        r = run(command, "--help")
        assert r.exit_code == 0 and "Usage" in r.output, command


def test_several_workers_need_a_shared_cache(home, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # serve sets it; restored after the test
    result = run("serve", "--workers", "2")  # memory:// cache: refused before anything starts
    assert result.exit_code == 2 and "SHOPMIND_CACHE_URL=redis://" in result.output


def test_risk_lists_from_the_command_line(home, tmp_path):
    assert run("init").exit_code == 0
    cards = tmp_path / "cards.txt"
    cards.write_text("card-1\ncard-2\n\ncard-3\n")
    r = run("risk", "list", "add", "stolen_cards", "--kind", "card", "--file", str(cards))
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"list_name": "stolen_cards", "added": 3}
    r = run("risk", "list", "remove", "stolen_cards", "card-2", "card-9", "--kind", "card")
    assert json.loads(r.stdout) == {"list_name": "stolen_cards", "removed": 1}
    r = run("risk", "list", "show")
    assert "stolen_cards" in r.stdout and " 2 " in r.stdout and "card-1" not in r.stdout
    assert run("risk", "list", "add", "stolen_cards", "x", "--kind", "planet").exit_code == 2   # names the field
    assert run("risk", "list", "add", "stolen_cards", "--kind", "card").exit_code == 2         # no values
    assert run("risk", "list", "drop", "stolen_cards").exit_code == 2
    assert run("risk", "list", "add", "x", "--kind", "card", "--file", str(tmp_path / "none")).exit_code == 2


def test_risk_thresholds_per_event_kind_from_the_command_line(home):
    assert run("init").exit_code == 0
    r = run("risk", "thresholds", "--review", "0.6", "--block", "0.97", "--kind", "login")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["by_kind"] == {"login": {"review": 0.6, "block": 0.97}}
    shown = json.loads(run("risk", "thresholds").stdout)
    assert (shown["review"], shown["block"]) == (0.5, 0.9) and "login" in shown["by_kind"]
    assert json.loads(run("risk", "thresholds", "--kind", "login", "--shop-wide").stdout)["by_kind"] == {}
    assert run("risk", "thresholds", "--kind", "login", "--shop-wide").exit_code == 1     # not found: none set
    assert run("risk", "thresholds", "--review", "0.1", "--block", "0.2", "--kind", "signup").exit_code == 2
    assert run("risk", "thresholds", "--shop-wide").exit_code == 2                        # which kind?


def test_evaluate_a_sequence_file_with_the_blend(tmp_path):
    """`shopmind evaluate --sequences FILE --json`: every named model under the protocol, on a shop's own
    export; an unknown model is bad input (exit 2)."""
    import numpy as np

    rng = np.random.default_rng(0)
    lines = []
    for u in range(300):  # each user walks a chain of 40 items from a random start
        start = int(rng.integers(40))
        lines.append(" ".join([f"u{u}"] + [f"i{(start + n) % 40}" for n in range(int(rng.integers(5, 10)))]))
    path = tmp_path / "seqs.txt"
    path.write_text("\n".join(lines) + "\n")
    r = run("evaluate", "--sequences", str(path), "--models", "popularity,blend", "--json")
    assert r.exit_code == 0, r.output
    rows = {row["model"]: row for row in json.loads(r.stdout)}
    assert set(rows) == {"popularity", "blend"} and rows["blend"]["users"] == 300
    assert rows["blend"]["hr@10"] > rows["popularity"]["hr@10"] + 0.3, rows
    assert run("evaluate", "--sequences", str(path), "--models", "blend,magic").exit_code == 2


@pytest.mark.parametrize("args", [["--schedule", "nanm"], ["--schedule", "infh"], ["--dp", "--epsilon", "nan"],
                                  ["--budget", "nan"]])
def test_numbers_that_are_not_numbers_exit_2(home, args):
    assert run("init").exit_code == 0
    r = run("train", *args)
    assert r.exit_code == 2, r.output


def test_a_schedule_retrains_every_interval_and_outlives_a_failed_run(home, monkeypatch):
    from shopmind.exceptions import StorageError
    from shopmind.shop import Shop

    assert run("init").exit_code == 0
    trainings, sleeps = [], []

    def train(self, actor, **kwargs):
        trainings.append(actor)
        if len(trainings) == 2:
            raise StorageError("database unreachable")
        return {"popularity": {"version": f"v{len(trainings)}"}}

    class Stop(Exception):
        pass

    def sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise Stop

    monkeypatch.setattr(Shop, "train", train)
    monkeypatch.setattr("time.sleep", sleep)
    r = run("train", "--schedule", "30m")
    assert isinstance(r.exception, Stop), r.output
    assert len(trainings) == 3 and sleeps == [1800.0, 1800.0, 1800.0]  # the failed second run did not end it
    assert "training failed (exit 1)" in r.output and '"v3"' in r.output


def test_a_schedule_stops_on_bad_configuration(home):
    r = run("train", "--schedule", "30m")                 # no `shopmind init`: no key file
    assert r.exit_code == 2 and "key file" in r.output


def test_a_malformed_keyring_is_a_clear_error(home, monkeypatch):
    monkeypatch.setenv("SHOPMIND_KEYRING", json.dumps({kind: {"active": "k1", "keys": ["x"]}
                                                       for kind in ("pseudonym", "token", "encryption")}))
    r = run("stats")
    assert r.exit_code == 2 and "malformed" in r.output


def test_bad_option_values_exit_2_not_with_a_traceback(home, tmp_path):
    not_utf8 = tmp_path / "seqs.txt"
    not_utf8.write_bytes(b"u1 i1 i2\nu2 \xff\xfe i3\n")
    for args, name in ((["evaluate", "--sequences", str(tmp_path)], "not a file"),
                       (["evaluate", "--sequences", str(not_utf8)], "UTF-8"),
                       (["privacy", "curve", "--sequences", str(not_utf8), "--epsilons", "nan"], "--epsilons"),
                       (["train", "--schedule", "300000d"], "--schedule")):
        result = run(*args)
        assert result.exit_code == 2 and name in result.output, (args, result.output)


def test_json_output_stays_parseable_however_long_a_value():
    """The consoles that print --json do not wrap lines (rich wraps at 80 columns off a terminal)."""
    import json

    from shopmind.cli import main, privacy

    for console in (main.out, privacy.out):
        with console.capture() as captured:
            console.print(json.dumps({"path": "/very/long/" + "x" * 300}, indent=2), highlight=False)
        assert json.loads(captured.get())["path"].endswith("x" * 300)


def test_an_id_given_twice_in_a_file_is_refused_across_chunks(shop, tmp_path):
    """The same user id twice in one file is ambiguous (which profile wins?): refused whether the two rows
    fall in one chunk or in two, with the file's row numbers."""
    rows = [{"user_id": "u1", "country": "DE"}, {"user_id": "u2"}, {"user_id": "u1", "country": "FR"}]
    path = tmp_path / "users.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    for chunk in (1, 2, 10):
        with pytest.raises(BatchValidationError) as caught:
            shop.import_file(path, "users", "test", chunk=chunk)
        assert [(e.index, e.field, e.message) for e in caught.value.errors] == [
            (3, "user_id", "duplicate of line 1 in the same file")]
        assert shop.store.count("users") == 0


def _count(home: Path, table: str) -> int:
    import sqlite3

    with sqlite3.connect(home / "shopmind.db") as db:
        return db.execute(f"select count(*) from {table}").fetchone()[0]


@pytest.mark.parametrize("name, content", [
    # valid JSON, but the NUL check recursed through it (a RecursionError, exit 1 with a traceback)
    ("items.jsonl", '{"item_id": "i1", "title": "t", "attributes": ' + '{"a": ' * 400 + "1" + "}" * 400 + "}\n"),
    # lines json.loads cannot read for reasons other than syntax
    ("items.jsonl", '{"item_id": "i1", "title": "t", "attributes": ' + '{"a": ' * 100_000 + "1" + "}" * 100_000 + "}\n"),
    ("items.jsonl", '{"item_id": "i1", "title": "t", "stock": ' + "9" * 5000 + "}\n"),
    ("items.csv", b"item_id,title\ni1,ok\ni2,caf\xe9\n"),  # not UTF-8: named by its line now
])
def test_files_that_cannot_be_read_exit_2_naming_the_problem(home, tmp_path, name, content):
    assert run("init").exit_code == 0
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    r = run("import", str(path))
    assert r.exit_code == 2 and ("line" in r.output or "attributes" in r.output), r.output
    assert _count(home, "items") == 0


def test_a_parquet_file_with_a_damaged_data_page_exits_2(home, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    assert run("init").exit_code == 0
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"item_id": [f"i{i}" for i in range(5000)], "title": [f"title {i}" * 5 for i in range(5000)]}),
                   good, compression="snappy", row_group_size=1000)
    damaged = bytearray(good.read_bytes())
    for i in range(len(damaged) // 3, len(damaged) // 3 + 200):  # inside a data page; the footer stays intact
        damaged[i] ^= 0xFF
    (tmp_path / "items.parquet").write_bytes(bytes(damaged))
    r = run("import", str(tmp_path / "items.parquet"))
    assert r.exit_code == 2 and "not a readable Parquet file" in r.output, r.output
    assert _count(home, "items") == 0


def test_a_folder_with_two_files_of_one_kind_exits_2_instead_of_importing_one(home, tmp_path):
    assert run("init").exit_code == 0
    folder = tmp_path / "shop"
    folder.mkdir()
    (folder / "items.csv").write_text("item_id,title\ni1,a\n")
    (folder / "items.jsonl").write_text('{"item_id": "i2", "title": "b"}\n')
    r = run("import", str(folder))
    assert r.exit_code == 2 and "items.csv and items.jsonl" in r.output, r.output
    assert _count(home, "items") == 0


def test_output_paths_that_cannot_be_written_exit_2_and_change_nothing(home, tmp_path):
    """Tracebacks before; `init` had already committed an admin key whose secret no one saw."""
    assert run("init").exit_code == 0
    keys_before = _count(home, "api_keys")
    r = run("init", "--admin-key-file", str(tmp_path / "missing" / "admin.key"))
    assert r.exit_code == 2 and "--admin-key-file" in r.output and _count(home, "api_keys") == keys_before, r.output
    (tmp_path / "users.jsonl").write_text('{"user_id": "u1", "country": "DE"}\n')
    assert run("import", str(tmp_path / "users.jsonl")).exit_code == 0
    audit_before = _count(home, "audit_log")
    r = run("export-user", "u1", "--out", str(tmp_path / "missing" / "u1.json"))
    assert r.exit_code == 2 and "--out" in r.output and _count(home, "audit_log") == audit_before, r.output
    (tmp_path / "a-file").write_text("")
    r = run("generate", "--out", str(tmp_path / "a-file"), "--users", "100", "--days", "1")
    assert r.exit_code == 2 and "is a file" in r.output, r.output


def test_an_unknown_kind_is_named_as_such(home, tmp_path):
    assert run("init").exit_code == 0
    (tmp_path / "items.jsonl").write_text('{"item_id": "i1", "title": "t"}\n')
    r = run("import", str(tmp_path / "items.jsonl"), "--kind", "bogus")
    assert r.exit_code == 2 and "--kind must be one of" in r.output, r.output


def test_init_after_one_killed_before_it_wrote_the_admin_key_writes_a_working_one(home):
    """`init` commits the admin key, then writes it: killed in between, the file is empty and the key's
    only copy is lost. A rerun used to keep that empty file ("kept existing")."""
    assert run("init").exit_code == 0
    key_file = home / "admin.key"
    key_file.write_text("")  # what the kill leaves
    r = run("init")
    assert r.exit_code == 0 and "kept existing" not in r.output.split("admin key")[-1], r.output
    admin = key_file.read_text().strip()
    assert admin.startswith("sm_")
    r = run("init")  # a working key is kept
    assert r.exit_code == 0 and key_file.read_text().strip() == admin
    from shopmind.auth import KeyVerifier, Scope
    from shopmind.config import load_settings
    from shopmind.shop import Shop

    shop = Shop.open(load_settings())
    try:
        assert Scope.admin in KeyVerifier(shop.store).verify(admin).scopes
    finally:
        shop.close()


def test_ids_ingestion_could_never_store_and_negative_budgets_exit_2_and_change_nothing(home):
    """`erase-user ''` wrote an erasure receipt, `risk freeze ''` froze the pseudonym of the empty string
    (with an audit entry), `train --budget -5` trained and promoted: found by a docs review."""
    assert run("init").exit_code == 0
    before = {t: _count(home, t) for t in ("erasure_receipts", "risk_accounts", "audit_log")}
    for args in (["erase-user", ""], ["export-user", ""], ["risk", "freeze", ""], ["risk", "unfreeze", ""],
                 ["erase-user", "x" * 129]):
        r = run(*args)
        assert r.exit_code == 2 and "user_id" in r.output, (args, r.output)
    assert {t: _count(home, t) for t in before} == before
    r = run("train", "--budget", "-5")
    assert r.exit_code == 2 and "--budget" in r.output, r.output
    assert not (home / "models" / "popularity").exists()


def test_init_refuses_new_keys_over_a_database_that_holds_data(home, tmp_path):
    """New keys compute other pseudonyms: every stored user would be out of reach of erasure and export,
    which then reported success (found by a CLI review)."""
    assert run("init").exit_code == 0
    (tmp_path / "users.jsonl").write_text('{"user_id": "u1", "email": "u1@example.org"}\n')
    assert run("import", str(tmp_path / "users.jsonl")).exit_code == 0
    (home / "keys.json").rename(tmp_path / "keys.json")  # lost, or SHOPMIND_KEYRING empty by mistake
    r = run("init")
    assert r.exit_code == 2 and "restore the key file" in r.output and not (home / "keys.json").exists(), r.output
    (tmp_path / "keys.json").rename(home / "keys.json")
    assert run("init").exit_code == 0 and json.loads(run("export-user", "u1").stdout)["user_id"] == "u1"


def test_a_csv_without_its_header_line_is_refused_without_quoting_its_first_row(home, tmp_path):
    """The first data row became the column names, and the unknown-field errors quoted them: a raw id, an
    e-mail, a phone number, an address (found by a CLI review)."""
    assert run("init").exit_code == 0
    (tmp_path / "users.csv").write_text("u0000001,hugo.thomas@example.org,+33 7 6694731\n")
    r = run("import", str(tmp_path / "users.csv"))
    assert r.exit_code == 2 and "header" in r.output, r.output
    assert "hugo" not in r.output and "u0000001" not in r.output and "6694731" not in r.output
    assert _count(home, "users") == 0


def test_an_export_that_fails_leaves_the_file_there_and_one_that_succeeds_is_owner_only(home, tmp_path):
    """The output was opened (truncated) before the export ran: an export of an unknown user deleted an
    existing file, and an existing 0644 file received a user's data with its mode unchanged."""
    import stat

    assert run("init").exit_code == 0
    (tmp_path / "users.jsonl").write_text('{"user_id": "u1", "email": "u1@example.org"}\n')
    assert run("import", str(tmp_path / "users.jsonl")).exit_code == 0
    target = tmp_path / "precious.json"
    target.write_text("precious")
    target.chmod(0o644)
    assert run("export-user", "nobody", "--out", str(target)).exit_code != 0
    assert target.read_text() == "precious"
    assert run("export-user", "u1", "--out", str(target)).exit_code == 0
    assert json.loads(target.read_text())["user_id"] == "u1" and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


@pytest.mark.parametrize("args, problem", [
    (["generate", "--out", "{tmp}/g", "--seed", "-1"], "--seed"),
    (["risk", "backtest", "--margin", "-5"], "--margin"),
    (["risk", "backtest", "--review-cost", "nan"], "--review-cost"),
])
def test_out_of_range_options_exit_2(home, tmp_path, args, problem):
    assert run("init").exit_code == 0
    r = run(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert r.exit_code == 2 and problem in r.output, r.output


def test_a_one_day_shop_is_generated(home, tmp_path):
    """Sessions running past the window's end fell in a time bucket past the last: an IndexError and a
    half-written folder for --days 1 (two seeds of three) and --days 2 (found by a CLI review)."""
    for seed in ("0", "1"):
        r = run("generate", "--out", str(tmp_path / seed), "--users", "100", "--days", "1", "--seed", seed)
        assert r.exit_code == 0 and (tmp_path / seed / "events.parquet").exists(), r.output


def test_import_folders_read_every_file_they_name_or_refuse(home, tmp_path):
    """Files named for a kind that a folder import does not read (Orders.csv, events.csv.gz) were passed
    over without a word; --kind on a folder was ignored; a folder named like a file was a traceback."""
    assert run("init").exit_code == 0
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "users.csv").write_text("user_id\nu1\n")
    (folder / "README.txt").write_text("not data")
    (folder / "Orders.csv").write_text("order_id,user_id,ts,amount\no1,u1,2026-01-05T10:00:00Z,3\n")
    r = run("import", str(folder))
    assert r.exit_code == 2 and "Orders.csv" in r.output and _count(home, "users") == 0, r.output
    (folder / "Orders.csv").unlink()
    assert run("import", str(folder), "--kind", "users").exit_code == 2
    (folder / "items.csv").mkdir()
    r = run("import", str(folder))
    assert r.exit_code == 2 and "items.csv" in r.output, r.output
    (folder / "items.csv").rmdir()
    assert run("import", str(folder)).exit_code == 0 and _count(home, "users") == 1  # README.txt is not data


def test_a_timestamp_given_as_a_number_is_refused(home, tmp_path):
    """20260105 was read as Unix seconds, 1970-08-23, and stored without a word (found by a CLI review)."""
    assert run("init").exit_code == 0
    (tmp_path / "events.csv").write_text("event_id,user_id,type,item_id,ts\ne1,u1,view,i1,20260105\n")
    r = run("import", str(tmp_path / "events.csv"))
    assert r.exit_code == 2 and "ISO 8601" in r.output and _count(home, "events") == 0, r.output


def test_configuration_mistakes_exit_2_naming_them(home, tmp_path, monkeypatch):
    """An empty SHOPMIND_HOME read as the working directory (keys and database landed there); a cache URL
    Redis cannot parse was a traceback (found by a CLI review)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SHOPMIND_HOME", "")
    r = run("init")
    assert r.exit_code == 2 and "home" in r.output and not (tmp_path / "keys.json").exists(), r.output
    monkeypatch.setenv("SHOPMIND_HOME", str(home))
    assert run("init").exit_code == 0
    monkeypatch.setenv("SHOPMIND_CACHE_URL", "redis://:hunter2@127.0.0.1:notaport/0")
    r = run("stats")
    assert r.exit_code == 2 and "cache_url" in r.output and "hunter2" not in r.output, r.output


def test_a_command_refuses_an_sqlite_database_that_does_not_exist(home, tmp_path, monkeypatch):
    """Only init creates a database: a mistyped database_url made every command create and migrate an
    empty one, missing folders included, and carry on as if the shop were empty (found by a CLI review)."""
    assert run("init").exit_code == 0
    monkeypatch.setenv("SHOPMIND_DATABASE_URL", f"sqlite:///{tmp_path / 'typo' / 'shopmind.db'}")
    r = run("stats")
    assert r.exit_code == 2 and "shopmind init" in r.output and not (tmp_path / "typo").exists(), r.output


def test_empty_files_import_no_rows_whatever_their_format(home, tmp_path):
    """A 0-byte CSV exited 2 (polars' NoDataError) where an empty JSONL file or a header-only CSV
    imported 0 rows (found by a CLI review)."""
    assert run("init").exit_code == 0
    for name in ("users.csv", "items.jsonl"):
        (tmp_path / name).write_text("")
        r = run("import", str(tmp_path / name))
        assert r.exit_code == 0, (name, r.output)


def test_init_makes_no_keys_for_a_database_it_cannot_reach(home, monkeypatch):
    """Keys made for a database nobody could look into might be the wrong ones for the data it holds
    (the check above needs to read it): the database is reached first, and its error named in a line."""
    monkeypatch.setenv("SHOPMIND_DATABASE_URL", "postgresql://shop:hunter2@127.0.0.1:1/shop")
    r = run("init")
    assert r.exit_code == 1 and "cannot open the database" in r.output and "hunter2" not in r.output, r.output
    assert not (home / "keys.json").exists()


def test_csv_problems_are_named_by_their_line_without_quoting_values(home, tmp_path):
    """The CSV reader parsed a file whole and its errors named no line: a ragged row, an unterminated quote
    or bytes that are not UTF-8 came back as "not a readable CSV file", and a bad value as "row N" counted
    from 0 after the header. Every problem now names the line an editor shows, and quotes no value."""
    assert run("init").exit_code == 0
    header = "event_id,user_id,type,item_id,ts\n"
    good = "e1,u1,view,i1,2026-01-05T10:00:00Z\n"
    cases = {
        "too many fields": (header + good + "e2,u0000042,view,i1,2026-01-05T10:00:00Z,x\n",
                            "line 3 has 6 fields where the header has 5"),
        "short, a required field missing": (header + good + "e2,u0000042,view\n", "line 3: ts"),
        "unterminated quote": (header + good + good.replace("e1", "e2") + 'e3,u0000042,view,"i1,2026\n',
                               "line 4 is not well-formed CSV"),
        "quote then text": (header + good + '"e2"u0000042,u1,view,i1,2026-01-05T10:00:00Z\n',
                            "line 3 is not well-formed CSV"),
        "bad value": (header + "\n" + good + "e2,u0000042,fly,i1,2026-01-05T10:00:00Z\n", "line 4: type"),
        "quoted field over two lines": (header + '"e1","u1","view","i\n1",2026-01-05T10:00:00Z\n'
                                        + "e2,u0000042,fly,i1,2026-01-05T10:00:00Z\n", "line 4: type"),
        "same header twice": ("event_id,user_id,type,type,item_id,ts\n" + "e1,u1,view,view,i1,2026-01-05T10:00:00Z\n",
                              "'type' more than once"),
    }
    for name, (text, expected) in cases.items():
        path = tmp_path / "events.csv"
        path.write_text(text)
        r = run("import", str(path))
        assert r.exit_code == 2 and expected in r.output, (name, r.output)
        assert "u0000042" not in r.output, (name, r.output)
        assert _count(home, "events") == 0, name
    (tmp_path / "events.csv").write_bytes(header.encode() + good.encode() + b"e2,u\xff1,view,i1,2026-01-05T10:00:00Z\n")
    r = run("import", str(tmp_path / "events.csv"))
    assert r.exit_code == 2 and "line 3 is not valid UTF-8" in r.output, r.output
    assert _count(home, "events") == 0


def test_a_csv_with_a_byte_order_mark_and_crlf_lines_imports(home, tmp_path):
    """Spreadsheets save CSV with a UTF-8 byte-order mark and CRLF line ends; the mark is not part of the
    first column's name."""
    assert run("init").exit_code == 0
    rows = ["event_id,user_id,type,item_id,ts", "e1,u1,view,i1,2026-01-05T10:00:00Z",
            "e2,u1,add_to_cart,i1,2026-01-05T10:01:00Z", ""]
    (tmp_path / "events.csv").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode())
    r = run("import", str(tmp_path / "events.csv"))
    assert r.exit_code == 0, r.output
    assert _count(home, "events") == 2


def test_init_makes_the_home_owner_only_and_warns_about_a_home_or_database_others_can_read(home):
    """A database made before new ones were created owner-only kept its 0644 after an upgrade, with no
    word about it (found by an upgrade review), and the home folder was made 0755, so the model files'
    lineage of trained pseudonyms was readable by every local user (found by a privacy review). A new
    home is 0700; `init` keeps an existing mode, which its owner may have chosen, and says so."""
    r = run("init")
    assert r.exit_code == 0 and "warning" not in r.output, r.output
    assert home.stat().st_mode & 0o777 == 0o700
    (home / "shopmind.db").chmod(0o644)
    home.chmod(0o755)
    r = run("init")
    assert r.exit_code == 0 and "chmod 600" in r.output and "0644" in r.output, r.output
    assert "chmod 700" in r.output and "0755" in r.output, r.output
    assert (home / "shopmind.db").stat().st_mode & 0o777 == 0o644 and home.stat().st_mode & 0o777 == 0o755


def test_a_user_id_that_is_not_utf8_exits_2_on_the_command_line(home):
    """An id typed in a Latin-1 terminal reaches Python with surrogates: export-user and erase-user died
    with a UnicodeEncodeError traceback (found by a privacy review)."""
    assert run("init").exit_code == 0
    latin1 = b"m\xfcller".decode("utf-8", "surrogateescape")
    for command in ("export-user", "erase-user"):
        r = run(command, latin1)
        assert r.exit_code == 2 and "not valid UTF-8" in r.output, (command, r.output, r.exception)
    assert _count(home, "erasure_receipts") == 0


def test_risk_freeze_and_unfreeze_say_what_they_did(home):
    """They printed nothing on success (found by a risk docs review); the raw id is not repeated."""
    assert run("init").exit_code == 0
    r = run("risk", "freeze", "u-42", "--reason", "chargeback")
    assert r.exit_code == 0 and json.loads(r.stdout) == {"frozen": True} and "u-42" not in r.stdout, r.output
    r = run("risk", "unfreeze", "u-42")
    assert r.exit_code == 0 and json.loads(r.stdout) == {"frozen": False}, r.output


def test_spreadsheet_csv_shapes_import_as_they_did(shop, tmp_path):
    """Found by a review of the streaming reader: a header ending in ",," (formatted empty columns) was
    refused as naming '' twice, a row whose last empty cells were left out was refused as short, and a
    field over 128 KiB (attributes that JSONL carries) as malformed; the polars reader imported all three."""
    items = tmp_path / "items.csv"
    items.write_bytes(b"\xef\xbb\xbfitem_id,title,brand,,\r\ni1,Mug,Acme,,\r\ni2,Tea\r\n")
    assert shop.import_file(items, "items", actor="t").written == 2
    items.write_text("item_id,title,,\ni3,Cup,,oops\n")  # a value under an unnamed column is still refused
    with pytest.raises(BatchValidationError) as refused:
        shop.import_file(items, "items", actor="t")
    assert refused.value.errors[0].index == 2 and "oops" not in str(refused.value)
    with open(items, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["item_id", "title", "attributes"])
        writer.writerow(["i4", "Tea", json.dumps({"spec": "\u4e2d" * 22_000})])  # 132,012 characters escaped
    assert shop.import_file(items, "items", actor="t").written == 1


def test_parquet_attributes_read_back_without_the_keys_other_rows_had(shop, tmp_path):
    """A Parquet struct column holds every key any row has, None where a row had none: an item with two
    attributes in a catalog of 600 attribute names came back with 600 and was refused (found by a review)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"item_id": f"i{i}", "title": "x", "attributes": {f"a{i}": "v", "colour": "red"}} for i in range(600)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "items.parquet")
    assert shop.import_file(tmp_path / "items.parquet", "items", actor="t").written == 600
    stored = shop.store.fetch_all("SELECT attributes FROM items WHERE item_id = 'i7'")[0][0]
    assert json.loads(stored) == {"a7": "v", "colour": "red"}


def test_a_home_that_serve_creates_is_owner_only_as_inits(tmp_path):
    """Only init made the home 0700: `serve` run first created it (and shopmind.log) with the umask's mode
    (found by a review)."""
    import os
    import subprocess
    import sys

    home = tmp_path / "home"
    old = os.umask(0o022)
    try:
        subprocess.run([sys.executable, "-m", "shopmind.cli.main", "serve", "--port", "18779"],
                       env={**os.environ, "SHOPMIND_HOME": str(home)}, capture_output=True, timeout=120)
    finally:
        os.umask(old)
    assert home.stat().st_mode & 0o777 == 0o700
    assert (home / "shopmind.log").stat().st_mode & 0o777 == 0o600
