"""Typed settings: environment variables (SHOPMIND_*) over a TOML file over defaults.

Everything has a working default for one machine (SQLite and files under `home`), so a shop can start
with no configuration and move to PostgreSQL and Redis by setting two URLs. Unknown keys in the TOML
file are rejected by name, so a typo never silently falls back to a default.
See docs/configuration.md for every key.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from shopmind.exceptions import ConfigError


def private_dir(path: Path) -> Path:
    """Create a folder owner-only (0700) if it is missing: the home and what shopmind makes in it hold
    pseudonymised data (the database, model lineage, logs). An existing folder keeps its mode."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


PURPOSES = ("personalization", "advertising", "analytics")


def _config_file() -> Path:
    return Path(os.environ.get("SHOPMIND_CONFIG", "shopmind.toml"))


class Settings(BaseSettings):
    """shopmind's settings. Paths are relative to the working directory unless absolute."""

    model_config = SettingsConfigDict(env_prefix="SHOPMIND_", extra="forbid", validate_default=True)

    home: Path = Field(Path(".shopmind"), description="Folder for the embedded database, keys, models and logs.")
    database_url: str = Field("", description="SQLAlchemy URL; empty means SQLite at <home>/shopmind.db.")
    cache_url: str = Field("memory://", description="Online state: memory:// (in process) or redis://host:port/db.")
    key_file: Path | None = Field(None, description="Key file (pseudonym + encryption keys); default <home>/keys.json.")
    keyring: str = Field("", description="The key file's JSON given inline (e.g. from a secret store); wins over key_file.")
    model_dir: Path | None = Field(None, description="Model registry folder; default <home>/models.")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64, description="API processes; more than one needs a redis:// cache_url.")
    api_threads: int = Field(32, ge=1, le=256, description="Worker threads per API process for blocking work "
                             "(database reads; first visits then wait for their batch's model pass).")
    serve_gc_freeze: bool = Field(True, description="At startup, move the opened shop's objects out of the "
                                  "cycle collector's reach, so its full collections stop scanning them.")
    recommend_batch: int = Field(32, ge=1, le=1024, description="Most first-visit recommendations ranked "
                                 "together in one transformer pass and catalog scan; 1 ranks each alone.")
    recommend_bf16_scan: bool = Field(True, description="Batched first visits over 20,000 items or more scan "
                                      "the catalog in bfloat16 and prove each answer exact (rescanning in "
                                      "float32 where the bound cannot); False scans in float32 only.")
    recommend_traced_pass: bool = Field(True, description="Run the serving pass of the behaviour model as one "
                                        "TorchScript call (traced per model, checked against the eager pass, "
                                        "eager when tracing fails); False runs it eagerly.")
    refresh_states: bool = Field(True, description="When a user's events are ingested, recompute in a "
                                 "background thread what their next request reads: the behaviour-model state "
                                 "(risk decisions) and, with personalization consent, their recommendations.")
    warm_states_days: float = Field(7.0, ge=0, le=3650, allow_inf_nan=False,
                                    description="When the server starts (and when it loads a newly promoted "
                                    "behaviour version), queue that background refresh for the "
                                    "users with events in this many days before the newest event (newest first, "
                                    "up to the refresher's queue of 10,000), so their first request after a "
                                    "restart is answered as after their next event; 0 turns it off.")
    max_batch: int = Field(10_000, ge=1, le=100_000, description="Most rows accepted in one ingestion request.")
    default_consent: bool = Field(
        False, description="Consent assumed for users the shop never sent consent flags for (opt-in by default)."
    )
    item_text: bool = Field(True, description="Give the behaviour model title embeddings of every catalog item "
                                              "(needs the 'text' extra), so untouched items can be recommended.")
    log_level: str = "INFO"
    docs_public: bool = Field(True, description="Serve /docs and /openapi.json without a key (they hold no data).")
    dp_budget_analytics: float = Field(10.0, ge=0, allow_inf_nan=False, description="Total epsilon that differentially private reports "
                                                            "for the analytics purpose may spend (privacy ledger).")
    dp_budget_advertising: float = Field(5.0, ge=0, allow_inf_nan=False, description="Total epsilon for reports released to advertisers.")
    risk_alert_webhooks: list[str] = Field(default_factory=list, description="URLs that receive risk alerts "
                                           "(rule hit-rate or fraud-rate jumps) as JSON POSTs, retried with backoff.")
    risk_alert_interval_s: float = Field(60.0, gt=0, allow_inf_nan=False, description="How often the service checks for risk alerts.")
    dp_delta_budget: float = Field(1e-5, ge=0, lt=1, description="Total delta per purpose (the noisy threshold's "
                                                                 "small chance of releasing a rare group).")
    dp_budget_training: float = Field(16.0, ge=0, allow_inf_nan=False, description="Total epsilon that differentially private trainings "
                                      "of the behaviour model may spend, summed over runs (each sees the same users).")
    dp_delta_budget_training: float = Field(0.01, ge=0, lt=1, description="Total delta of those trainings (each run's "
                                            "delta defaults to 1 / number of users).")

    @field_validator("risk_alert_webhooks")
    @classmethod
    def _webhook_urls(cls, urls: list[str]) -> list[str]:
        """Each an http(s) URL with a host: "not a url" was accepted and failed each of its six deliveries."""
        from urllib.parse import urlsplit

        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("each webhook must be an http:// or https:// URL with a host")
        return urls

    @field_validator("home", mode="before")
    @classmethod
    def _home_named(cls, value: object) -> object:
        # An empty SHOPMIND_HOME (a failed substitution in a deploy script) read as the working directory:
        # keys, database and admin key landed there, in a checkout perhaps. Unset it for the default.
        if isinstance(value, str) and not value.strip():
            raise ValueError("home is empty: name a folder, or unset SHOPMIND_HOME for the default .shopmind")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError(f"log_level must be DEBUG, INFO, WARNING or ERROR, got {value!r}")
        return level

    @model_validator(mode="after")
    def _fill_paths(self) -> "Settings":
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / 'shopmind.db'}"
        if self.key_file is None:
            self.key_file = self.home / "keys.json"
        if self.model_dir is None:
            self.model_dir = self.home / "models"
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=_config_file()))


def load_settings(**overrides: Any) -> Settings:
    """Settings from overrides, environment and shopmind.toml; a bad value raises ConfigError naming the key."""
    if "SHOPMIND_CONFIG" in os.environ and not _config_file().is_file():
        # named on purpose: silently falling back to the defaults would open a fresh embedded database
        raise ConfigError(f"SHOPMIND_CONFIG names {_config_file()}, which is not a file")
    toml = _config_file()
    try:
        # pydantic-settings matches keys whatever their case (Keyring, KEYRING), so this does too
        if toml.is_file() and any(k.lower() == "keyring" for k in tomllib.loads(toml.read_text())):
            # a config file is easily committed with the code: keys come from the environment or a key file
            raise ConfigError(f"{toml} sets keyring: give keys through SHOPMIND_KEYRING or a key file, "
                              "never in the config file")
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid configuration: {problems}") from exc
    except SettingsError as exc:  # an environment value that is not the JSON a list or dict setting needs
        raise ConfigError(f"invalid configuration: {str(exc).splitlines()[0]}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid configuration: {toml} is not valid TOML ({exc})") from exc
