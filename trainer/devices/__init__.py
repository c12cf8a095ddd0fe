"""Device identities: the site PKI (a CA, the broker's certificate, one client certificate per device, a CRL)
behind ``edge-trainer devices init|server|provision|rotate|revoke|crl|list``. ``pki.py`` is the pure part
(bytes in, bytes out), ``store.py`` the directory and its ledger; the commands are trainer/commands/devices.py."""

from trainer.devices.pki import PkiError
from trainer.devices.store import CertRecord, SitePki

__all__ = ["CertRecord", "PkiError", "SitePki"]
