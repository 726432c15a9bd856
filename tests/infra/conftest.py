"""Synthesize the app once per profile per session, as `cdk synth` would (cdk.json's context,
a fake account, seeded availability zones: no credentials, no network lookups)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk
from aws_cdk.assertions import Template

from app import build
from stacks.config import load_config
from tests.support.templates import ACCOUNT, PROD, REGION

PROD_KEYS = {k: v for k, v in PROD.items() if k != "profile"}

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Synth:
    outdir: Path
    network: Template
    data: Template
    service: Template
    raw: dict[str, dict[str, Any]]

    def templates(self) -> dict[str, Template]:
        return {"Network": self.network, "Data": self.data, "Service": self.service}


def synthesize(profile: str, **context: Any) -> Synth:
    # What the CLI adds to the context: resource path metadata, which also tells cfn-lint
    # the template comes from CDK.
    base = {
        **json.loads((ROOT / "cdk.json").read_text())["context"],
        "aws:cdk:enable-path-metadata": True,
        "aws:cdk:enable-asset-metadata": True,
    }
    outdir = Path(tempfile.mkdtemp(prefix=f"cdk-{profile}-"))
    app = cdk.App(context={**base, "profile": profile, **context}, outdir=str(outdir))
    config = load_config(
        {**base, "profile": profile, **context}, {"CDK_DEFAULT_ACCOUNT": ACCOUNT, "CDK_DEFAULT_REGION": REGION}
    )
    network, data, service = build(app, config)
    assembly = app.synth()
    raw = {s.stack_name: s.template for s in assembly.stacks}
    return Synth(
        outdir,
        Template.from_json(raw[network.stack_name]),
        Template.from_json(raw[data.stack_name]),
        Template.from_json(raw[service.stack_name]),
        raw,
    )


@pytest.fixture(scope="session")
def dev() -> Synth:
    return synthesize("dev")


@pytest.fixture(scope="session")
def prod() -> Synth:
    return synthesize("prod", **PROD_KEYS, allowedCidrs="203.0.113.0/24,2001:db8::/32")


@pytest.fixture(scope="session")
def lean() -> Synth:
    return synthesize("lean")


# The scaled variants: Aurora Serverless v2 with a reader behind RDS Proxy (each profile), and
# an RDS instance with two read replicas behind the proxy.
AURORA = {"database": "aurora-serverless-v2", "readers": "1", "rdsProxy": "true"}
# The fixtures below, which every gate (cdk-nag, cfn-lint, checkov) runs on too.
SCALED = ["dev_aurora", "lean_aurora", "prod_aurora", "dev_replicas", "prod_restored", "aurora_restored"]
RESTORED = "conversations-prod-data-restore-20261203-093000"


@pytest.fixture(scope="session")
def dev_aurora() -> Synth:
    # A cluster behind RDS Proxy never pauses: dev keeps half an ACU (config refuses minAcu 0).
    return synthesize("dev", **AURORA, minAcu="0.5")


@pytest.fixture(scope="session")
def lean_aurora() -> Synth:
    return synthesize("lean", **AURORA, minAcu="0.5")


@pytest.fixture(scope="session")
def prod_aurora() -> Synth:
    return synthesize("prod", **PROD_KEYS, **AURORA)


@pytest.fixture(scope="session")
def dev_replicas() -> Synth:
    return synthesize("dev", readers="2", rdsProxy="true")


@pytest.fixture(scope="session")
def prod_restored() -> Synth:
    """Prod after make restore: the instance (and its replica) from a snapshot."""
    return synthesize("prod", **PROD_KEYS, readers="1", restoreSnapshot=RESTORED)


@pytest.fixture(scope="session")
def aurora_restored() -> Synth:
    """An Aurora cluster after make restore."""
    return synthesize("dev", **AURORA, minAcu="0.5", restoreSnapshot=RESTORED)
