"""The daemon's configuration: unknown keys with their path, env overrides, credentials, file errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, CredentialError, load_config, loads_config

BASE = "mqtt: {site: s1, device: d1}\n"


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            BASE + "cameras: [{name: a, source: {type: rtsp, urll: 'rtsp://x'}}]",
            "cameras.0.source.rtsp.urll: Extra inputs are not permitted",
        ),
        (BASE + "loging: {level: info}", "loging: Extra inputs are not permitted"),
        (
            BASE + "model: {backend: {type: onnxruntime, threads: 2}}",
            "model.backend.onnxruntime.threads: Extra inputs are not permitted",
        ),
        (BASE + "model: {backend: {type: cuda}}", "model.backend: Input tag 'cuda'"),
        (BASE + "daemon: {status_interval_s: -1}", "daemon.status_interval_s: Input should be greater than 0"),
        ("mqtt: {site: s1}", "mqtt.device: Field required"),
        (
            BASE + "cameras: [{name: a, source: {type: synthetic}}, {name: a, source: {type: synthetic}}]",
            "duplicate camera names ['a']",
        ),
        (BASE + "mqtt: {site: s2, device: d2}", "duplicate key 'mqtt'"),
        ("- a list", "(top level): expected a mapping"),
        (
            BASE + "cameras: [{name: a, source: {type: synthetic}, rules: {alerts: [{name: r, min_confidence: 2}]}}]",
            "cameras.0.rules.alerts.0.min_confidence",
        ),
    ],
)
def test_bad_configs_name_the_key(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        loads_config(text, environ={})
    assert expected in str(info.value)


def test_environment_overrides_with_types_and_list_indices() -> None:
    text = BASE + "cameras: [{name: a, source: {type: synthetic}}]"
    env = {
        "EDGE_AGENT__MQTT__PORT": "1883",
        "EDGE_AGENT__MQTT__HOST": "broker.local",
        "EDGE_AGENT__METRICS__ENABLED": "true",
        "EDGE_AGENT__CAMERAS__0__FPS_LIMIT": "2.5",
        "EDGE_AGENT__MQTT__GROUPS": "[line3, north]",
        "UNRELATED": "x",
    }
    config = loads_config(text, environ=env)
    assert config.mqtt.port == 1883 and config.mqtt.host == "broker.local"
    assert config.metrics.enabled is True
    assert config.cameras[0].fps_limit == 2.5
    assert config.mqtt.groups == ["line3", "north"]


@pytest.mark.parametrize(
    "env, expected",
    [
        ({"EDGE_AGENT__CAMERAS__3__FPS_LIMIT": "1"}, "cameras.3: no such list item"),
        ({"EDGE_AGENT__MQTT__PORT": "not-a-port"}, "mqtt.port: Input should be a valid integer"),
        ({"EDGE_AGENT__MQTT__NOPE": "1"}, "mqtt.nope: Extra inputs are not permitted"),
    ],
)
def test_bad_environment_overrides(env: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        loads_config(BASE + "cameras: [{name: a, source: {type: synthetic}}]", environ=env)
    assert expected in str(info.value)


def test_credentials_come_from_the_credentials_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cam-url").write_text("rtsp://user:secret@10.0.0.5/stream\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    config = loads_config(BASE + "cameras: [{name: a, source: {type: rtsp, url: !credential cam-url}}]", environ={})
    assert config.cameras[0].source.url == "rtsp://user:secret@10.0.0.5/stream"  # type: ignore[union-attr]


@pytest.mark.parametrize("name, problem", [("missing", "cannot read"), ("../etc/passwd", "one path component")])
def test_bad_credentials_are_reported_with_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, problem: str
) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    with pytest.raises(CredentialError) as info:
        loads_config(BASE + f"cameras: [{{name: a, source: {{type: rtsp, url: !credential '{name}'}}}}]", environ={})
    assert "cameras.0.source.url" in str(info.value) and problem in str(info.value)


def test_credential_without_credentials_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(CredentialError, match=r"CREDENTIALS_DIRECTORY is not set"):
        loads_config(BASE + "cameras: [{name: a, source: {type: rtsp, url: !credential u}}]", environ={})


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml", environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("mqtt: [unclosed")
    with pytest.raises(ConfigError, match="YAML"):
        load_config(bad, environ={})
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(binary, environ={})


def test_example_config_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "press-1-url").write_text("rtsp://10.0.0.21:554/stream1\n")
    (tmp_path / "press-1-sub-url").write_text("rtsp://10.0.0.21:554/stream2\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    example = Path(__file__).resolve().parents[2] / "examples" / "config.yaml"
    config = load_config(example, environ={})
    assert config.cameras and config.metrics.enabled is False
    press = config.cameras[0].source
    assert press.type == "rtsp" and press.main_url == "rtsp://10.0.0.21:554/stream1"


def test_disk_budget_caps_the_spool() -> None:
    config = loads_config(
        BASE + "spool: {max_bytes: 1000000000}\n"
        "disk_budget: {total_bytes: 300000000, staging_reserve_bytes: 100000000}",
        environ={},
    )
    assert config.spool_config().max_bytes == 200000000


def test_loading_the_configuration_does_not_import_the_update_machinery() -> None:
    # agent/config.py used to import ModelUpdatesConfig from agent/app/ (an arrow running back up): reading the
    # configuration loaded the update service, the installer, tuf and requests
    import subprocess
    import sys

    probe = (
        "import sys, agent.config; "
        "print([m for m in ('tuf', 'requests', 'agent.ota.installer', 'agent.ota.fetchers', 'agent.app.model_updates',"
        " 'agent.daemon') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
