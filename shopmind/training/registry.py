"""Model registry on the local file system: versions with cards, a current pointer, lineage.

    <root>/<kind>/<version>/model/        the model's own files (model.save / Model.load)
    <root>/<kind>/<version>/card.json     config, data window, metrics, training time, erasure notes
    <root>/<kind>/<version>/subjects.parquet  pseudonyms whose data the version was trained on (lineage)
    <root>/<kind>/CURRENT                 the promoted version; history.json keeps earlier ones for rollback

Lineage lets erasure reach models: an erased pseudonym is removed from every lineage file, models that
keep per-user state forget it (`erase_subject` on the model), and the card counts erasures since
training, so retraining can be scheduled. Pointer files are replaced atomically.

Writers (registering, promoting, rolling back, erasing, remapping) hold the registry's lock: a thread lock
in the process and an exclusive `flock` on `<root>/.lock` across processes (`shopmind erase-user` beside
the server, two API workers). Every file is written to a temporary file of its own and renamed into
place, and a version is staged in a folder of its own and renamed in under the lock, so a reader (which
takes no lock) sees a file or a version whole or not at all.

A version becomes visible already scrubbed of the users erased while it trained (`register(erased_since=)`,
applied under the lock, before the rename), so no crash between registering and a later clean-up can leave
an erased pseudonym in lineage. A staging folder names its process; one whose process is gone (a training
killed while it registered) is deleted under the lock by the next writer, erasure included.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import polars as pl

from shopmind.config import private_dir
from shopmind.exceptions import InvalidInputError, NotFoundError
from shopmind.models.popularity import TrendingPopularity
from shopmind.storage.cache import CacheMiss

MODEL_KINDS = ("popularity", "behaviour", "risk")
VERSION_PATTERN = re.compile(r"v\d{8}-\d{6}-\d+")
POINTER_RECHECK_S = 1.0
ANY_CHAMPION = object()  # register(if_current=...)'s default: promote whatever is current
STAGING = ".staging-"
FOREIGN_STAGING_STALE_S = 86_400  # another host's staging folder, whose process cannot be asked


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"


def _staging_is_dead(folder: Path) -> bool:
    """A staging folder (`.staging-<host>-<pid>-<random>`) whose process is gone: a training killed while
    it registered. Another host's (a shared model folder), or one named before folders named their
    process, counts as dead once a day old."""
    parts = folder.name[len(STAGING):].split("-")
    if len(parts) >= 3 and parts[0] == _host() and parts[1].isdigit():
        try:
            os.kill(int(parts[1]), 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
        return False
    try:
        return time.time() - folder.stat().st_mtime > FOREIGN_STAGING_STALE_S
    except FileNotFoundError:
        return False


def _pointed(base: Path) -> str | None:
    """The version a kind's CURRENT file names, read from disk (not the cached pointer): for decisions
    taken under the registry's lock."""
    pointer = base / "CURRENT"
    return pointer.read_text().strip() if pointer.exists() else None


def model_class(kind: str) -> type:
    """The class that saves and loads a kind. The behaviour model's (and torch) is imported only when
    a behaviour model is used, so commands like `shopmind import` start quickly."""
    if kind == "behaviour":
        from shopmind.recommend.behaviour import BehaviourRecommender

        return BehaviourRecommender
    if kind == "risk":
        from shopmind.risk.model import RiskModel

        return RiskModel
    return TrendingPopularity


def replace_file(path: Path, write) -> None:
    """Write `path` through `write(temporary path)` to a temporary file of its own in the same folder, then
    rename it into place: a reader sees the old file or the new one, and two writers never share a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, 0o644)  # what a plain open() gives, not mkstemp's 0600
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _write_atomic(path: Path, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    replace_file(path, write)


def _write_lineage(path: Path, subjects: pl.DataFrame) -> None:
    replace_file(path, lambda tmp: subjects.write_parquet(tmp))


class ModelRegistry:
    name = "models"  # as an Erasable

    def __init__(self, root: Path):
        self.root = Path(root)
        self._loaded: dict[str, tuple[str, Any]] = {}
        self._pointers: dict[str, tuple[tuple[int, int, int], str, float]] = {}  # kind -> (stat, version, read at)
        self._lock = threading.Lock()  # the loaded-model cache
        self._write_lock = threading.RLock()  # writers in this process; `_locked` adds the file lock
        self._lock_depth = 0
        self._lock_file: int | None = None
        # Called as on_switch(kind, version) after this process replaced a loaded model by a newly
        # promoted (or rolled back) version; the server warms the states the new version needs.
        self.on_switch: Callable[[str, str], None] | None = None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the registry for a read-modify-write: the thread lock, then an exclusive flock on
        `<root>/.lock` (other processes, and other ModelRegistry objects on the same root). Re-entrant."""
        with self._write_lock:
            if self._lock_depth == 0:
                private_dir(self.root)
                fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(fd)
                    raise
                self._lock_file = fd
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
                if self._lock_depth == 0:
                    fd, self._lock_file = self._lock_file, None
                    os.close(fd)  # closing releases the flock

    def _kind_dir(self, kind: str) -> Path:
        if kind not in MODEL_KINDS:
            raise InvalidInputError(f"unknown model kind {kind!r}: expected one of {sorted(MODEL_KINDS)}", field="kind")
        return self.root / kind

    def register(self, kind: str, model: Any, card: dict[str, Any], subjects: list[str], promote: bool = True,
                 if_current: str | None | object = ANY_CHAMPION,
                 erased_since: Callable[[], Collection[str]] | None = None) -> str:
        """Store a new version; with `promote`, make it current. `if_current`: promote only if the current
        version is still this one (the champion a gate compared the model with; None: no version), read
        under the registry's lock, so a training that promoted meanwhile is not replaced by a model gated
        against its predecessor. Whether it was promoted: `current_version(kind) == version`.

        `erased_since()`: the pseudonyms erased since the training read its data (ErasureRegistry.
        erased_after), called under the lock. They leave the staged lineage (and per-user model state)
        before the version appears, and the card counts them: an erasure recorded later reaches the
        version itself, since its registry step takes the same lock."""
        base = self._kind_dir(kind)
        base.mkdir(parents=True, exist_ok=True)
        # staged in a folder of its own (hidden: not a version, not in lineage), named under the lock
        staging = Path(tempfile.mkdtemp(dir=base, prefix=f"{STAGING}{_host()}-{os.getpid()}-"))
        try:
            model.save(staging / "model")
            lineage = set(subjects)
            with self._locked():
                self._drop_dead_staging()
                # the lineage is written here, once, without the users erased since the data was read
                gone = sorted(set(erased_since()) & lineage) if erased_since is not None else []
                kept = pl.DataFrame({"pseudonym": sorted(lineage.difference(gone))}, schema={"pseudonym": pl.Utf8})
                kept.write_parquet(staging / "subjects.parquet")
                for pseudonym in gone:
                    self._rewrite_model(kind, staging, "erase_subject", pseudonym)
                version = time.strftime("v%Y%m%d-%H%M%S", time.gmtime())
                n = 1
                while (base / f"{version}-{n}").exists():
                    n += 1
                version = f"{version}-{n}"
                full_card = {"kind": kind, "version": version, "created_ms": int(time.time() * 1000),
                             **card, "erased_since_training": len(gone)}
                (staging / "card.json").write_text(json.dumps(full_card, indent=2, sort_keys=True))
                os.chmod(staging, 0o755)  # mkdtemp's 0700 otherwise
                os.rename(staging, base / version)
                if promote and (if_current is ANY_CHAMPION or if_current == _pointed(base)):
                    self.promote(kind, version)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return version

    def versions(self, kind: str) -> list[dict[str, Any]]:
        base = self._kind_dir(kind)
        if not base.exists():
            return []
        return [json.loads((d / "card.json").read_text()) for d in sorted(base.iterdir())
                if d.is_dir() and not d.name.startswith(".")]

    def card(self, kind: str, version: str) -> dict[str, Any]:
        path = self._kind_dir(kind) / version / "card.json"
        if not path.exists():
            raise NotFoundError(f"no {kind} model version {version!r}")
        return json.loads(path.read_text())

    def find_version(self, version: str) -> dict[str, dict[str, Any]]:
        """{kind: card} for every kind that has `version`; NotFoundError if none has it."""
        if not VERSION_PATTERN.fullmatch(version):
            raise InvalidInputError("a model version looks like v20260101-120000-1", field="version")
        found = {kind: json.loads((self._kind_dir(kind) / version / "card.json").read_text())
                 for kind in sorted(MODEL_KINDS) if (self._kind_dir(kind) / version / "card.json").is_file()}
        if not found:
            raise NotFoundError(f"no model version {version!r}")
        return found

    def current_version(self, kind: str) -> str | None:
        """The promoted version, read again only when the pointer file changed. Serving asks on every
        request; a stat is a third of what opening and reading the file cost. The pointer is only ever
        replaced by a rename (`_write_atomic`): a new inode and modification time, so a promotion or
        rollback, from this process or another, is seen on the next call. Two replacements within one
        file-system timestamp tick could reuse the inode number and size; the file is also re-read once
        a second, which bounds that case."""
        pointer = self._kind_dir(kind) / "CURRENT"
        try:
            st = os.stat(pointer)
        except FileNotFoundError:
            return None
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        now = time.monotonic()
        known = self._pointers.get(kind)
        if known is not None and known[0] == key and now - known[2] < POINTER_RECHECK_S:
            return known[1]
        version = pointer.read_text().strip()
        self._pointers[kind] = (key, version, now)
        return version

    def promote(self, kind: str, version: str) -> None:
        base = self._kind_dir(kind)
        if not VERSION_PATTERN.fullmatch(version):
            raise InvalidInputError("a model version looks like v20260101-120000-1", field="version")
        with self._locked():
            if not (base / version / "card.json").exists():
                raise NotFoundError(f"no {kind} model version {version!r}")
            history_file = base / "history.json"
            history = json.loads(history_file.read_text()) if history_file.exists() else []
            pointer = base / "CURRENT"
            previous = _pointed(base)
            # history first, then the pointer: a crash between leaves the current version on top of the
            # history too, which `rollback` passes over (and a rerun does not add it twice)
            if previous and previous != version and (not history or history[-1] != previous):
                history.append(previous)
            _write_atomic(history_file, json.dumps(history))
            _write_atomic(pointer, version)

    def rollback(self, kind: str) -> str:
        base = self._kind_dir(kind)
        with self._locked():
            history_file = base / "history.json"
            history = json.loads(history_file.read_text()) if history_file.exists() else []
            current = _pointed(base)
            while history and history[-1] == current:  # left by a promotion or rollback that crashed halfway
                history.pop()
            if not history:
                raise NotFoundError(f"no earlier {kind} version to roll back to")
            version = history.pop()
            _write_atomic(base / "CURRENT", version)
            _write_atomic(history_file, json.dumps(history))
            return version

    def load_current(self, kind: str, cached_only: bool = False) -> tuple[str, Any] | None:
        """The promoted model, loaded once per version (a new promotion is picked up on the next call).
        `cached_only`: raise CacheMiss rather than load it from disk."""
        version = self.current_version(kind)
        if version is None:
            return None
        switched = False
        with self._lock:
            cached = self._loaded.get(kind)
            if cached is None or cached[0] != version:
                if cached_only:
                    raise CacheMiss(kind)
                # The pointer again, under the lock: read before a promotion, then let in after another
                # reader loaded the new version, this reader put the old one back (and announced it, which
                # starts a server's warm-up), and the next request loaded the new one a third time.
                version = self.current_version(kind) or version
            if cached is None or cached[0] != version:
                switched = cached is not None
                cached = (version, model_class(kind).load(self._kind_dir(kind) / version / "model"))
                self._loaded[kind] = cached
        if switched and self.on_switch is not None:
            self.on_switch(kind, version)
        return cached

    def load_version(self, kind: str, version: str) -> Any:
        """One registered version of a model (the promoted one comes from the cache)."""
        current = self.load_current(kind)
        if current is not None and current[0] == version:
            return current[1]
        if not VERSION_PATTERN.fullmatch(version) or not (self._kind_dir(kind) / version / "model").is_dir():
            raise NotFoundError(f"no {kind} model version {version!r}")
        return model_class(kind).load(self._kind_dir(kind) / version / "model")

    # -- erasure and key rotation ------------------------------------------------------------------

    def _drop_dead_staging(self) -> None:
        """Delete the staging folders of trainings killed while they registered (under the lock): they
        hold lineage that erasure and key rotation, which walk versions only, would otherwise never reach."""
        for kind in MODEL_KINDS:
            base = self.root / kind
            if base.exists():
                for d in base.iterdir():
                    if d.name.startswith(STAGING) and d.is_dir() and _staging_is_dead(d):
                        shutil.rmtree(d, ignore_errors=True)

    def _version_dirs(self):
        if not self.root.exists():
            return
        for kind in MODEL_KINDS:
            base = self.root / kind
            if base.exists():
                for d in base.iterdir():  # not a staging folder: `register` scrubs it under the lock
                    if d.is_dir() and not d.name.startswith(".") and (d / "subjects.parquet").exists():
                        yield kind, d

    @staticmethod
    def _rewrite_model(kind: str, version_dir: Path, method: str, argument: Any) -> None:
        """For models that keep per-user state: load, apply `method(argument)`, save in place."""
        model_cls = model_class(kind)
        if hasattr(model_cls, method):
            model = model_cls.load(version_dir / "model")
            getattr(model, method)(argument)
            shutil.rmtree(version_dir / "model")
            model.save(version_dir / "model")

    def erase_subject(self, pseudonym: str) -> dict[str, int]:
        touched = 0
        if not self.root.exists():
            return {"models.versions": 0}
        with self._locked():
            self._drop_dead_staging()
            for kind, d in self._version_dirs():
                subjects = pl.read_parquet(d / "subjects.parquet")
                if pseudonym not in set(subjects["pseudonym"].to_list()):
                    continue
                # the card's count first: an erasure killed between the two files is found again by its
                # rerun (the lineage still names the user) and counted twice, which schedules a retraining
                # early; the other order lost the count for good
                card = json.loads((d / "card.json").read_text())
                card["erased_since_training"] = card.get("erased_since_training", 0) + 1
                _write_atomic(d / "card.json", json.dumps(card, indent=2, sort_keys=True))
                _write_lineage(d / "subjects.parquet", subjects.filter(pl.col("pseudonym") != pseudonym))
                self._rewrite_model(kind, d, "erase_subject", pseudonym)
                touched += 1
        with self._lock:
            self._loaded.clear()
        return {"models.versions": touched}

    def remap_subjects(self, mapping: dict[str, str]) -> None:
        """After pseudonym-key rotation: rewrite lineage (and per-user model state) to the new pseudonyms."""
        if not mapping or not self.root.exists():
            return
        with self._locked():
            self._drop_dead_staging()
            for kind, d in self._version_dirs():
                subjects = pl.read_parquet(d / "subjects.parquet")
                _write_lineage(d / "subjects.parquet", subjects.with_columns(pl.col("pseudonym").replace(mapping)))
                self._rewrite_model(kind, d, "remap_subjects", mapping)
        with self._lock:
            self._loaded.clear()
