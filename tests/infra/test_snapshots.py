"""Snapshots of every stack in both profiles, asset hashes masked so they hold on any machine.

A diff here is a change to what `cdk deploy` would do: read it, then accept it with
`make snapshot-update` (SNAPSHOT_UPDATE=1)."""

from __future__ import annotations

import json
import os
import re

import pytest

from tests.infra.conftest import ROOT

SNAPSHOTS = ROOT / "tests" / "infra" / "snapshots"
_HASH = re.compile(r"\b[0-9a-f]{64}\b")


def masked(template: dict) -> str:
    return _HASH.sub("<asset-hash>", json.dumps(template, indent=1, sort_keys=True)) + "\n"


@pytest.mark.parametrize("profile", ["dev", "prod"])
@pytest.mark.parametrize("stack", ["Network", "Data", "Service"])
def test_template_matches_snapshot(profile, stack, request):
    synth = request.getfixturevalue(profile)
    actual = masked(synth.templates()[stack].to_json())
    path = SNAPSHOTS / f"{profile}-{stack.lower()}.json"
    if os.environ.get("SNAPSHOT_UPDATE") == "1" or not path.exists():
        if os.environ.get("CI") and not path.exists():
            pytest.fail(f"snapshot {path.name} is missing; run `make snapshot-update` and commit it")
        path.write_text(actual)
    assert actual == path.read_text(), f"{path.name} differs; review, then `make snapshot-update`"
