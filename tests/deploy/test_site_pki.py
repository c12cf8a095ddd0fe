"""trainer/devices: the site PKI's rules without a broker (the broker side: test_device_identity.py)."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trainer.commands.devices import main as devices_main
from trainer.devices import PkiError, SitePki
from trainer.devices.pki import build_crl, check_device_id, describe, issue_device, new_ca

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def pki(tmp_path: Path) -> SitePki:
    site = SitePki(tmp_path / "pki", now=NOW)
    site.init()
    return site


@pytest.mark.parametrize("device", ["fleet", "groups", "a/b", "+", "#", "", "x" * 200, "dev a", "dév"])
def test_device_ids_that_would_break_the_acl_are_refused(device: str) -> None:
    with pytest.raises(PkiError):
        check_device_id(device)


@pytest.mark.parametrize("device", ["jetson-07", "line_3.cam", "a:b"])
def test_device_ids_the_agent_accepts_are_accepted(device: str) -> None:
    assert check_device_id(device) == device


def test_a_device_certificate_names_the_device_and_is_a_client_certificate(pki: SitePki) -> None:
    record = pki.provision("jetson-07")
    cert = x509.load_pem_x509_certificate(pki.device_cert("jetson-07").read_bytes())
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "jetson-07"
    assert cert.issuer == ca.subject and cert.serial_number == record.serial
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    cert.verify_directly_issued_by(ca)  # signed by the site CA
    info = describe(pki.device_cert("jetson-07").read_bytes())
    assert info.not_after - info.not_before >= dt.timedelta(days=397)
    assert stat.S_IMODE(pki.device_key("jetson-07").stat().st_mode) == 0o600
    assert stat.S_IMODE(pki.ca_key.stat().st_mode) == 0o600


def test_the_ca_is_never_overwritten(pki: SitePki) -> None:
    before = pki.ca_cert.read_bytes()
    with pytest.raises(PkiError, match="exists already"):
        pki.init()
    assert pki.ca_cert.read_bytes() == before


def test_provision_rotate_revoke_life_cycle(pki: SitePki) -> None:
    first = pki.provision("dev-a")
    with pytest.raises(PkiError, match="active certificate"):
        pki.provision("dev-a")
    with pytest.raises(PkiError, match="no active certificate"):
        pki.rotate("dev-b")
    second = pki.rotate("dev-a")
    assert second.serial != first.serial
    states = {r.serial: r.state for r in pki.records()}
    assert states == {first.serial: "superseded", second.serial: "active"}
    assert _crl_serials(pki) == set()  # rotating revokes nothing: the box keeps its link until it switches

    revoked = pki.revoke("dev-a", only_superseded=True)
    assert [r.serial for r in revoked] == [first.serial]
    assert _crl_serials(pki) == {first.serial}
    assert pki.device_cert("dev-a").exists()  # the active one is still there to hand out

    pki.revoke("dev-a")
    assert _crl_serials(pki) == {first.serial, second.serial}
    assert not pki.device_cert("dev-a").exists() and not pki.device_key("dev-a").exists()
    with pytest.raises(PkiError, match="no certificate to revoke"):
        pki.revoke("dev-a")
    pki.provision("dev-a")  # a revoked device can be enrolled again, with a new serial
    assert len({r.serial for r in pki.records()}) == 3


def test_revoking_one_serial_leaves_the_others(pki: SitePki) -> None:
    first = pki.provision("dev-a")
    pki.rotate("dev-a")
    pki.revoke("dev-a", serial=first.serial)
    assert _crl_serials(pki) == {first.serial}
    assert {r.state for r in pki.records()} == {"revoked", "active"}


def test_the_crl_is_signed_by_the_ca_and_says_when_to_refresh_it(pki: SitePki) -> None:
    pki.provision("dev-a")
    pki.revoke("dev-a")
    crl = x509.load_pem_x509_crl(pki.crl.read_bytes())
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    next_update = getattr(crl, "next_update_utc", None) or crl.next_update.replace(tzinfo=dt.timezone.utc)
    assert next_update == NOW + dt.timedelta(days=30)
    later = SitePki(pki.root, now=NOW + dt.timedelta(days=20))
    later.refresh_crl()
    crl = x509.load_pem_x509_crl(pki.crl.read_bytes())
    refreshed = getattr(crl, "next_update_utc", None) or crl.next_update.replace(tzinfo=dt.timezone.utc)
    assert refreshed == NOW + dt.timedelta(days=50) and len(list(crl)) == 1


def test_a_certificate_never_outlives_its_ca(tmp_path: Path) -> None:
    ca = new_ca(NOW, days=30)
    leaf = issue_device(ca.key_pem, ca.cert_pem, "dev-a", NOW, days=397)
    assert leaf.not_after <= ca.not_after


def test_a_leaf_certificate_cannot_act_as_the_ca(pki: SitePki) -> None:
    pki.provision("dev-a")
    key, cert = pki.device_key("dev-a").read_bytes(), pki.device_cert("dev-a").read_bytes()
    with pytest.raises(PkiError, match="not a CA"):
        issue_device(key, cert, "dev-b", NOW)
    with pytest.raises(PkiError, match="not a CA"):
        build_crl(key, cert, [], NOW)
    other = new_ca(NOW)
    with pytest.raises(PkiError, match="does not belong"):
        issue_device(other.key_pem, pki.ca_cert.read_bytes(), "dev-b", NOW)


def test_a_damaged_ledger_is_a_clear_error(pki: SitePki) -> None:
    (pki.root / "ledger.json").write_text("{not json")
    with pytest.raises(PkiError, match="unreadable ledger"):
        pki.provision("dev-a")


def test_cli_exit_codes_and_listing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = str(tmp_path / "pki")
    assert devices_main(["devices", "init", "--pki", root]) == 0
    assert devices_main(["devices", "init", "--pki", root]) == 2
    assert devices_main(["devices", "provision", "fleet", "--pki", root]) == 2
    assert "reserved" in capsys.readouterr().err
    assert devices_main(["devices", "provision", "dev-a", "--pki", root]) == 0
    assert devices_main(["devices", "rotate", "dev-a", "--pki", root]) == 0
    assert devices_main(["devices", "revoke", "dev-a", "--superseded", "--pki", root]) == 0
    capsys.readouterr()
    assert devices_main(["devices", "list", "--json", "--pki", root]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(r["state"] for r in listed) == ["active", "revoked"]


def _crl_serials(pki: SitePki) -> set:
    return {entry.serial_number for entry in x509.load_pem_x509_crl(pki.crl.read_bytes())}
