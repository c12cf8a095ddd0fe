"""The site PKI's pure part: keys, certificates and the revocation list as bytes in, bytes out (no files).

::

    new_ca(now)                         -> Issued   the site CA (EC P-256, CA:TRUE pathlen 0, keyCertSign+cRLSign)
    issue_server(ca, host, ips, now)    -> Issued   the broker's certificate (SAN, serverAuth)
    issue_device(ca, device, now)       -> Issued   a device's client certificate: CN = device id = its MQTT
                                                    username on the TLS listener (use_identity_as_username)
    build_crl(ca, revoked, now)         -> bytes    the CRL mosquitto's ``crlfile`` reads
    describe(cert_pem)                  -> CertInfo subject CN, serial, validity, fingerprint

Device ids must be valid MQTT topic levels that the agent accepts (``agent.protocol.topics.check_segment``),
and not the reserved ``fleet``/``groups``: a CN is substituted for ``%u`` in the broker's ACL.

Errors: :class:`PkiError` (a bad device id, a CA that is not one, bytes that are not a certificate).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.protocol.topics import RESERVED_DEVICE_IDS, check_segment

__all__ = [
    "CertInfo",
    "Issued",
    "PkiError",
    "build_crl",
    "check_device_id",
    "describe",
    "issue_device",
    "issue_server",
    "new_ca",
]

CA_DAYS = 3650
DEVICE_DAYS = 397  # about 13 months: rotated yearly, with a month of overlap
SERVER_DAYS = 825
CRL_DAYS = 30  # mosquitto refuses every client once the CRL's next update has passed: refresh it before


class PkiError(ValueError):
    """A device id, certificate or key the site PKI cannot use."""


@dataclass(frozen=True)
class Issued:
    """A new key and its certificate, PEM-encoded; ``serial`` for the ledger and the CRL."""

    key_pem: bytes
    cert_pem: bytes
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime


@dataclass(frozen=True)
class CertInfo:
    common_name: str
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime
    sha256: str
    is_ca: bool


def check_device_id(device: str) -> str:
    try:
        check_segment("device", device)
    except ValueError as exc:
        raise PkiError(str(exc)) from exc
    if device in RESERVED_DEVICE_IDS:
        raise PkiError(f"device id {device!r} is reserved (it names site-wide topics)")
    return device


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _load_ca(ca_key_pem: bytes, ca_cert_pem: bytes) -> Tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    try:
        key = serialization.load_pem_private_key(ca_key_pem, password=None)
        cert = x509.load_pem_x509_certificate(ca_cert_pem)
    except ValueError as exc:
        raise PkiError(f"not a CA key and certificate: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError("the CA key is not an EC key")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise PkiError("the CA certificate has no basicConstraints") from None
    if not constraints.ca:
        raise PkiError("the CA certificate is not a CA (basicConstraints CA:FALSE)")
    if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
        raise PkiError("the CA key does not belong to the CA certificate")
    return key, cert


def _utc(now: dt.datetime) -> dt.datetime:
    if now.tzinfo is None:
        raise PkiError("times must be timezone-aware")
    return now.astimezone(dt.timezone.utc)


def new_ca(now: dt.datetime, name: str = "edge-site-ca", days: int = CA_DAYS) -> Issued:
    now = _utc(now)
    key = _key()
    serial = x509.random_serial_number()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(_key_pem(key), cert.public_bytes(serialization.Encoding.PEM), serial, *_validity(cert))


def _validity(cert: x509.Certificate) -> Tuple[dt.datetime, dt.datetime]:
    before = getattr(cert, "not_valid_before_utc", None) or cert.not_valid_before.replace(tzinfo=dt.timezone.utc)
    after = getattr(cert, "not_valid_after_utc", None) or cert.not_valid_after.replace(tzinfo=dt.timezone.utc)
    return before, after


def _leaf(
    ca_key_pem: bytes,
    ca_cert_pem: bytes,
    cn: str,
    now: dt.datetime,
    days: int,
    usage: x509.ObjectIdentifier,
    san: Optional[List[x509.GeneralName]] = None,
) -> Issued:
    now = _utc(now)
    ca_key, ca_cert = _load_ca(ca_key_pem, ca_cert_pem)
    key = _key()
    serial = x509.random_serial_number()
    ca_after = _validity(ca_cert)[1]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=days), ca_after))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return Issued(_key_pem(key), cert.public_bytes(serialization.Encoding.PEM), serial, *_validity(cert))


def issue_device(
    ca_key_pem: bytes, ca_cert_pem: bytes, device: str, now: dt.datetime, days: int = DEVICE_DAYS
) -> Issued:
    """A client certificate whose CN is ``device`` (checked: a topic level, not reserved)."""
    return _leaf(ca_key_pem, ca_cert_pem, check_device_id(device), now, days, ExtendedKeyUsageOID.CLIENT_AUTH)


def issue_server(
    ca_key_pem: bytes, ca_cert_pem: bytes, host: str, ips: Sequence[str], now: dt.datetime, days: int = SERVER_DAYS
) -> Issued:
    san: List[x509.GeneralName] = [x509.DNSName(host)]
    try:
        san += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    except ValueError as exc:
        raise PkiError(f"not an IP address: {exc}") from exc
    return _leaf(ca_key_pem, ca_cert_pem, host, now, days, ExtendedKeyUsageOID.SERVER_AUTH, san)


def build_crl(
    ca_key_pem: bytes,
    ca_cert_pem: bytes,
    revoked: Iterable[Tuple[int, dt.datetime]],
    now: dt.datetime,
    days: int = CRL_DAYS,
) -> bytes:
    """The CRL listing ``(serial, revoked_at)`` pairs, valid for ``days``."""
    now = _utc(now)
    ca_key, ca_cert = _load_ca(ca_key_pem, ca_cert_pem)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(now + dt.timedelta(days=days))
    )
    for serial, when in sorted(set(revoked)):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(_utc(when)).build()
        )
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def describe(cert_pem: bytes) -> CertInfo:
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise PkiError(f"not a PEM certificate: {exc}") from exc
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    before, after = _validity(cert)
    return CertInfo(
        str(names[0].value) if names else "",
        cert.serial_number,
        before,
        after,
        cert.fingerprint(hashes.SHA256()).hex(),
        is_ca,
    )
