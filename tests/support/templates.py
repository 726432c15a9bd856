"""The templates of a set of deployment variants, as plain JSON: synthesized from this checkout,
or read back from a recorded release (tests/infra/released/<release>/<variant>.json.gz).

At a release, record what it deploys so the next one is checked against it:

    .venv/bin/python -m tests.support.templates tests/infra/released/<release>
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"
REGION = "eu-west-1"
CERT = f"arn:aws:acm:{REGION}:{ACCOUNT}:certificate/12345678-1234-1234-1234-123456789012"
ROLES = ("Network", "Data", "Service")
ASSET_HASH = re.compile(r"\b[0-9a-f]{64}\b")
"""An asset hash (S3 key, image tag, asset path): it changes with the machine and the wheels pip picked."""
PROD: Mapping[str, str] = {
    "profile": "prod",
    "certificateArn": CERT,
    "domainName": "api.example.com",
    "alarmEmail": "ops@example.com",
}
"""The least a prod deployment names: its certificate, the name that certificate covers, an alarm address."""
_AURORA = "aurora-serverless-v2"

# The deployments an operator runs: each profile, and each with the database features that
# change what the stacks share (a proxy, readers, Aurora).
VARIANTS: Mapping[str, Mapping[str, Any]] = {
    "dev": {"profile": "dev"},
    "lean": {"profile": "lean"},
    "prod": PROD,
    "dev-proxy": {"profile": "dev", "rdsProxy": "true"},
    "dev-readers": {"profile": "dev", "readers": "2"},
    "dev-aurora": {"profile": "dev", "database": _AURORA, "readers": "1", "rdsProxy": "true", "minAcu": "0.5"},
    "prod-proxy": {**PROD, "rdsProxy": "true", "readers": "1"},
    "prod-aurora": {**PROD, "database": _AURORA, "readers": "1", "rdsProxy": "true"},
}
Templates = dict[str, dict[str, Any]]
"""A deployment's templates by the stack's role: Network, Data, Service."""


def masked(template: Any) -> Any:
    """Asset hashes change with the machine and the wheels pip picked: masked, as the snapshots do."""
    return json.loads(ASSET_HASH.sub("<asset-hash>", json.dumps(template)))


def synthesize(context: Mapping[str, Any]) -> Templates:
    """The three templates this checkout deploys with ``context`` (cdk.json's, then these keys),
    without bundling assets or calling anything."""
    import aws_cdk as cdk

    from app import build
    from stacks.config import load_config

    base = json.loads((ROOT / "cdk.json").read_text())["context"]
    full = {**base, **context}
    app = cdk.App(context={**full, "aws:cdk:bundling-stacks": []})
    stacks = build(app, load_config(full, {"CDK_DEFAULT_ACCOUNT": ACCOUNT, "CDK_DEFAULT_REGION": REGION}))
    assembly = app.synth()
    return {
        role: masked(assembly.get_stack_by_name(stack.stack_name).template)
        for role, stack in zip(ROLES, stacks, strict=True)
    }


def synthesized(context: Mapping[str, str]) -> Templates:
    """:func:`synthesize`, once per distinct context in a test session (the templates are read,
    never changed, by the tests that share them)."""
    return _synthesized(tuple(sorted(context.items())))


@functools.cache
def _synthesized(context: tuple[tuple[str, str], ...]) -> Templates:
    return synthesize(dict(context))


def record(directory: Path) -> None:
    """Write every variant's templates to ``directory`` (one gzipped JSON file each)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, context in VARIANTS.items():
        path = directory / f"{name}.json.gz"
        path.write_bytes(gzip.compress(json.dumps(synthesize(context), sort_keys=True).encode(), mtime=0))
        print(f"recorded {name}: {path}", file=sys.stderr)


def recorded(directory: Path, variant: str) -> Templates:
    """A variant's templates as a release recorded them."""
    templates: Templates = json.loads(gzip.decompress((directory / f"{variant}.json.gz").read_bytes()))
    return templates


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m tests.support.templates tests/infra/released/<release>")
    record(Path(sys.argv[1]))
