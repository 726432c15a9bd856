"""TLS to PostgreSQL, verified: ``sslmode=verify-full`` against the certificate authorities of
RDS, Aurora and RDS Proxy, shipped beside this module (``rds-ca-bundle.pem``: in the image and
in the schema Lambda's bundle alike).

``DB_SSLROOTCERT`` names another bundle (a test's own CA, a private CA in front of the
database). Encryption without verification (``require``) hands the password to whoever answers
on the database's address, so it is never the default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

RDS_CA_BUNDLE = Path(__file__).resolve().with_name("rds-ca-bundle.pem")
DEFAULT_SSLMODE = "verify-full"
VERIFYING_MODES = ("verify-ca", "verify-full")


def ssl_params(env: Mapping[str, str] | None = None, *, sslmode: str | None = None) -> dict[str, str]:
    """libpq's ``sslmode`` and, when it verifies, ``sslrootcert``: ``DB_SSLMODE`` (default
    verify-full) and ``DB_SSLROOTCERT`` (default the shipped RDS bundle)."""
    env = os.environ if env is None else env
    mode = sslmode or env.get("DB_SSLMODE") or DEFAULT_SSLMODE
    params = {"sslmode": mode}
    if mode in VERIFYING_MODES:
        params["sslrootcert"] = env.get("DB_SSLROOTCERT") or str(RDS_CA_BUNDLE)
    return params


def describe_tls_failure(message: str, rootcert: str | None) -> str | None:
    """A clear sentence for a certificate libpq refused, or None for any other failure."""
    lowered = message.lower()
    if "certificate verify failed" in lowered:
        return (
            f"the database's TLS certificate is not signed by a certificate authority in {rootcert} "
            "(sslmode=verify-full): another server answers on that address, or the bundle is out of date"
        )
    if "does not match host name" in lowered:
        return f"the database's TLS certificate does not name the host connected to (sslmode=verify-full): {message}"
    return None
