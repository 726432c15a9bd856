"""The gates: cfn-lint on every synthesized template, cdk-nag as a synth failure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk import aws_s3 as s3

from tests.infra.conftest import ROOT, SCALED


@pytest.mark.parametrize("profile", ["dev", "lean", "prod", *SCALED])
def test_cfn_lint_reports_nothing(profile: str, request: pytest.FixtureRequest) -> None:
    synth = request.getfixturevalue(profile)
    templates = sorted(str(p) for p in synth.outdir.glob("*.template.json"))
    assert len(templates) == 3
    result = subprocess.run(
        [str(Path(sys.executable).with_name("cfn-lint")), *templates], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_cdk_nag_fails_synth_on_an_unacknowledged_finding() -> None:
    """The gate is real: one careless bucket is enough to stop synth."""
    with pytest.raises(RuntimeError, match=r"ValidationFailed(.|\n)*Careless(.|\n)*AwsSolutions-S10"):
        synthesize_with_extra_bucket()


def synthesize_with_extra_bucket() -> None:
    from app import build
    from stacks.config import load_config

    base = json.loads((ROOT / "cdk.json").read_text())["context"]
    app = cdk.App(context={**base, "aws:cdk:bundling-stacks": []})
    config = load_config({"profile": "dev"}, {"CDK_DEFAULT_ACCOUNT": "123456789012", "CDK_DEFAULT_REGION": "eu-west-1"})
    network, _, _ = build(app, config)
    s3.Bucket(network, "Careless")
    app.synth()


@pytest.mark.parametrize("profile", ["dev", "lean", "prod", *SCALED])
def test_cdk_nag_passes_with_every_acknowledgement_scoped_reasoned_and_used(
    profile: str, request: pytest.FixtureRequest
) -> None:
    synth = request.getfixturevalue(profile)
    report = json.loads((synth.outdir / "validation-report.json").read_text())
    (nag,) = [r for r in report["pluginReports"] if r["pluginName"] == "AwsSolutions"]
    assert nag["conclusion"] == "success"
    assert nag["violations"] == []
    used = set()
    for suppressed in nag["suppressedViolations"]:
        where = suppressed["acknowledgedAt"]
        assert where.count("/") >= 1, f"{suppressed['ruleName']} acknowledged on a whole stack: {where}"
        assert len(suppressed["reason"]) >= 40
        for construct in suppressed["violatingConstructs"]:
            assert construct["constructPath"].startswith(where)
        used.add((where, suppressed["acknowledgedId"]))
    declared = set()
    for metadata_file in synth.outdir.glob("*.metadata.json"):
        for path, entries in json.loads(metadata_file.read_text()).items():
            for entry in entries:
                if entry["type"] == "aws:cdk:acknowledged-rules":
                    # aws-cdk-lib acknowledges some of its own CloudFormation-Validate rules; ours
                    # are the AwsSolutions ones.
                    declared |= {(path.lstrip("/"), r) for r in entry["data"] if r.startswith("AwsSolutions::")}
    assert declared, "no acknowledgements found: the metadata walk is broken"
    assert declared - used == set(), "acknowledgements that suppress nothing (stale, remove them)"
