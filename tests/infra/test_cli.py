"""`make synth` as a new user runs it: the pinned CDK CLI, cdk.json, no AWS credentials."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.infra.conftest import ROOT


def test_cdk_cli_synthesizes_three_templates_without_credentials(tmp_path: Path) -> None:
    npx = shutil.which("npx")
    if not (ROOT / "node_modules" / ".bin" / "cdk").exists() or npx is None:
        pytest.fail("the CDK CLI is not installed: run `make test` (it runs npm ci first)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CDK_"))}
    env.update(
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION="20",
        CDK_DISABLE_VERSION_CHECK="1",
    )
    result = subprocess.run(
        [str(ROOT / "node_modules" / ".bin" / "cdk"), "synth", "--quiet", "--no-notices", "-o", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    templates = sorted(p.name for p in tmp_path.glob("*.template.json"))
    assert templates == [
        "Conversations-dev-Data.template.json",
        "Conversations-dev-Network.template.json",
        "Conversations-dev-Service.template.json",
    ]
