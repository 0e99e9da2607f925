"""Settings: defaults that work, environment over TOML, unknown keys refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from shopmind.config import load_settings
from shopmind.exceptions import ConfigError
from shopmind.storage import SqlStore, open_cache


def test_defaults_put_everything_under_home(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.database_url == "sqlite:///.shopmind/shopmind.db"
    assert s.key_file == Path(".shopmind/keys.json") and s.model_dir == Path(".shopmind/models")
    assert s.cache_url == "memory://" and s.default_consent is False


def test_toml_file_and_environment(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shopmind.toml").write_text('port = 9001\nhome = "data"\n')
    assert load_settings().port == 9001 and load_settings().home == Path("data")
    monkeypatch.setenv("SHOPMIND_PORT", "9002")
    assert load_settings().port == 9002


def test_unknown_or_bad_keys_are_refused_by_name(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shopmind.toml").write_text("databse_url = 'sqlite:///x.db'\n")
    with pytest.raises(ConfigError, match="databse_url"):
        load_settings()
    (tmp_path / "shopmind.toml").write_text("log_level = 'LOUD'\n")
    with pytest.raises(ConfigError, match="log_level"):
        load_settings()


def test_unknown_backends_are_refused_by_scheme():
    with pytest.raises(ConfigError, match="mysql"):
        SqlStore("mysql://localhost/db")
    with pytest.raises(ConfigError, match="memcached"):
        open_cache("memcached://localhost")
