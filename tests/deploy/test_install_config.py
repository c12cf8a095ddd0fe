"""What the install scripts write and how the agent reads its credentials, without a box (the box itself:
tests/system). `edge-agent config example` is what a fresh install runs on; a credential the configuration
names but that is blank (the unit's SetCredential= default standing in for a missing file) is refused with
the file to write."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from agent.app import config_example
from agent.cli import main
from agent.config import (
    CredentialError,
    OtaCommandConfig,
    credential_file_problems,
    load_config,
    loads_config,
    loads_settings,
)

ROOT = Path(__file__).resolve().parents[2]
INSTALL_LIB = ROOT / "deploy" / "install-lib.sh"


def test_config_example_is_commented_and_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "example", "--device", "line 3/box", "--broker", "broker.plant:8883"]) == 0
    text = capsys.readouterr().out
    path = tmp_path / "config.yaml"
    path.write_text(text)
    config = load_config(path, environ={})
    assert config.mqtt.device == "line-3-box" and config.mqtt.host == "broker.plant" and config.mqtt.port == 8883
    assert str(config.model.path) == config_example.FACTORY_MODEL
    assert [c.name for c in config.cameras] == ["demo"] and config.ota is not None
    comments = [line for line in text.splitlines() if line.lstrip().startswith("#")]
    assert len(comments) >= 20, "the operator's guide to the file is in the file"
    # the commented-out blocks are valid YAML of the same schema once uncommented: no example that lies
    uncommented = re.sub(r"^(\s*)# (username|password_file|groups):", r"\1\2:", text, flags=re.M)
    assert yaml.safe_load(uncommented)["mqtt"]["password_file"] == "mqtt-password"


def test_config_example_rejects_a_bad_broker(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "example", "--broker", "host:port"]) == 2
    assert "HOST[:PORT]" in capsys.readouterr().err


def test_install_scripts_write_the_example_and_check_it() -> None:
    lib = INSTALL_LIB.read_text()
    assert "edge-agent config example >/etc/edge-agent/config.yaml.new" in lib
    assert "run --check --config /etc/edge-agent/config.yaml.new" in lib
    # no silent fallback to a one-line comment (issue 31, defect 1)
    assert "# edge-agent configuration: see docs/OPERATIONS.md" not in lib
    for script in ("install-x86.sh", "install-jetson.sh"):
        text = (ROOT / "deploy" / script).read_text()
        assert 'parse_args "$@"' in text and "print_next_steps" in text
    result = subprocess.run(
        ["bash", str(ROOT / "deploy" / "install-x86.sh"), "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0 and "--wheelhouse DIR" in result.stdout, result.stderr


BASE = "mqtt: {host: localhost, port: 1883, site: s, device: d}\n"


@pytest.mark.parametrize("content", ["", "\n", "  \n"])
def test_a_blank_credential_names_the_file_to_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str
) -> None:
    (tmp_path / "press-1-url").write_text(content)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    with pytest.raises(CredentialError) as info:
        loads_config(BASE + "cameras: [{name: a, source: {type: rtsp, url: !credential press-1-url}}]", environ={})
    message = str(info.value)
    assert "cameras.0.source.url" in message and "credential press-1-url is empty" in message
    assert "/etc/edge-agent/credentials/press-1-url" in message


def test_a_credential_the_unit_does_not_load_says_how_to_add_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    with pytest.raises(CredentialError, match=r"add LoadCredential=cam:/etc/edge-agent/credentials/cam"):
        loads_config(BASE + "cameras: [{name: a, source: {type: rtsp, url: !credential cam}}]", environ={})


def test_relative_secret_files_are_checked_before_the_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = loads_config(
        "mqtt: {host: h, port: 8883, site: s, device: d, username: u, password_file: mqtt-password,\n"
        "       tls: {ca_file: /ca.pem, cert_file: /d.pem, key_file: mqtt-client.key}}\n",
        environ={},
    )
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    (tmp_path / "mqtt-password").write_text("\n")  # the unit's SetCredential= default: the file was missing
    problems = credential_file_problems(config)
    assert len(problems) == 2
    assert problems[0].startswith("mqtt.password_file: credential mqtt-password is empty")
    assert problems[1].startswith("mqtt.tls.key_file: cannot read credential mqtt-client.key")
    (tmp_path / "mqtt-password").write_text("s3cret\n")
    (tmp_path / "mqtt-client.key").write_text("-----BEGIN PRIVATE KEY-----\n")
    assert credential_file_problems(config) == []


def test_commands_without_secrets_read_the_file_without_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """`edge-agent ota` and `status` (a root shell, edge-agent-usb@) use no secret: the rest is still checked."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    text = (
        BASE + "cameras:\n"
        "  - {name: a, source: {type: rtsp, url: !credential a-url}}\n"
        "  - {name: b, source: {type: http, url: !credential b-url}}\n"
        "console: {password: !credential console-password}\n"
        "ota: {state_dir: /var/lib/edge-agent/ota, trusted_root: /etc/edge-agent/trust/root.json}\n"
    )
    config = loads_settings(text, OtaCommandConfig, environ={}, credentials="optional")
    assert [c.name for c in config.cameras] == ["a", "b"] and config.ota is not None
    with pytest.raises(CredentialError, match="CREDENTIALS_DIRECTORY is not set"):
        loads_settings(text, OtaCommandConfig, environ={})  # a service needs them all
    with pytest.raises(Exception, match="max_bytez"):  # and every other key is checked as ever
        loads_settings(text + "spool: {max_bytez: 1}\n", OtaCommandConfig, environ={}, credentials="optional")


def test_ota_commands_that_write_run_as_the_state_owner(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Root running `ota install` would leave root's files in the daemon's state directory, which the daemon (its
    own user) then cannot read: refused, with the command to use instead; reading commands stay allowed."""
    import os

    if os.geteuid() != 0:
        pytest.skip("needs root (a state directory owned by another user)")
    state = tmp_path / "ota"
    state.mkdir()
    os.chown(state, 65534, 65534)
    config = tmp_path / "config.yaml"
    config.write_text(f"ota: {{state_dir: {state}, trusted_root: {tmp_path / 'root.json'}}}\n")
    assert main(["ota", "install", "--config", str(config), str(tmp_path / "bundle")]) == 2
    err = capsys.readouterr().err
    assert f"{state} belongs to nobody" in err and "runuser -u nobody --" in err
    assert main(["ota", "rollback", "--config", str(config)]) == 2
    capsys.readouterr()
    main(["ota", "status", "--config", str(config)])  # reading: never refused for the owner's sake
    assert "belongs to" not in capsys.readouterr().err
