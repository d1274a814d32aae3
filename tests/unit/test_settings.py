from __future__ import annotations

from pathlib import Path

import pytest

from dicom_node.domain.aetitle import Peer
from dicom_node.settings import ConfigError, load_settings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # settings read the process environment and ./config/node.toml: isolate both
    for name in list(__import__("os").environ):
        if name.startswith("DICOM_NODE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_give_an_embedded_sqlite_node(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.ae_title == "DICOM_NODE"
    assert (settings.dicom_port, settings.http_port) == (11112, 8000)
    assert settings.allowed_calling_aets == []
    assert settings.peers == {}
    assert settings.database_url == f"sqlite:///{tmp_path / 'data' / 'dicom-node.sqlite3'}"
    assert settings.log_phi is False


def test_environment_overrides_every_documented_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "AE_TITLE": "ARCHIVE",
        "DICOM_PORT": "104",
        "HTTP_PORT": "8080",
        "BIND_HOST": "0.0.0.0",
        "DATA_DIR": "/srv/dicom",
        "DATABASE_URL": "postgresql+psycopg://node@db/dicom",
        "ALLOWED_CALLING_AETS": "CT1, MR1",
        "PEERS": "PACS@10.1.2.3:104,WS1@ws1.local:11112",
        "STUDY_STABLE_SECONDS": "90",
    }
    for name, value in env.items():
        monkeypatch.setenv(f"DICOM_NODE_{name}", value)
    settings = load_settings()
    assert settings.ae_title == "ARCHIVE"
    assert (settings.dicom_port, settings.http_port) == (104, 8080)
    assert settings.bind_host == "0.0.0.0"
    assert settings.data_dir == Path("/srv/dicom")
    assert settings.database_url == "postgresql+psycopg://node@db/dicom"
    assert settings.allowed_calling_aets == ["CT1", "MR1"]
    assert settings.peers == {
        "PACS": Peer("PACS", "10.1.2.3", 104),
        "WS1": Peer("WS1", "ws1.local", 11112),
    }
    assert settings.study_stable_seconds == 90


def test_config_file_is_read_and_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "node.toml"
    config.write_text(
        'ae_title = "FROMFILE"\ndicom_port = 2000\n[peers]\nPACS = "pacs.local:104"\n'
    )
    monkeypatch.setenv("DICOM_NODE_DICOM_PORT", "3000")
    settings = load_settings(config)
    assert settings.ae_title == "FROMFILE"
    assert settings.dicom_port == 3000
    assert settings.peers["PACS"] == Peer("PACS", "pacs.local", 104)


def test_repository_config_file_holds_only_the_defaults() -> None:
    repo_config = Path(__file__).resolve().parents[2] / "config" / "node.toml"
    assert load_settings(repo_config) == load_settings()


def test_config_file_from_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "other.toml"
    config.write_text('peers = ["PACS@h:104"]\n')
    monkeypatch.setenv("DICOM_NODE_CONFIG", str(config))
    assert list(load_settings().peers) == ["PACS"]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DICOM_PORT", "abc", "DICOM_NODE_DICOM_PORT"),
        ("HTTP_PORT", "70000", "DICOM_NODE_HTTP_PORT"),
        ("AE_TITLE", "WAY_TOO_LONG_AE_TITLE", "DICOM_NODE_AE_TITLE"),
        ("PEERS", "PACS10.1.2.3:104", "DICOM_NODE_PEERS"),
        ("ALLOWED_CALLING_AETS", "OK,BAD\\AE", "DICOM_NODE_ALLOWED_CALLING_AETS"),
        ("STUDY_STABLE_SECONDS", "0", "DICOM_NODE_STUDY_STABLE_SECONDS"),
        ("DATABASE_URL", "mysql://x/y", "DICOM_NODE_DATABASE_URL"),
        ("LOG_LEVEL", "LOUD", "DICOM_NODE_LOG_LEVEL"),
    ],
)
def test_invalid_values_give_one_line_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(f"DICOM_NODE_{name}", value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_unknown_key_in_config_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text("dicom_prot = 104\n")
    with pytest.raises(ConfigError, match="unknown setting 'dicom_prot'"):
        load_settings(config)


def test_broken_toml_is_refused_with_its_line(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('ae_title = "UNTERMINATED\n')
    with pytest.raises(ConfigError, match=r"not valid TOML.*line 1"):
        load_settings(config)


def test_missing_explicit_config_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_a_short_metrics_token_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DICOM_NODE_METRICS_TOKEN", "short")
    with pytest.raises(ConfigError, match="metrics_token"):
        load_settings()
    monkeypatch.setenv("DICOM_NODE_METRICS_TOKEN", "a-long-enough-scrape-token")
    assert load_settings().metrics_token is not None
