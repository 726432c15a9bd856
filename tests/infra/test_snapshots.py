"""Snapshots (syrupy) of every stack in both profiles, asset hashes masked so they hold on any
machine. A missing snapshot fails, as does a changed one.

A diff here is a change to what `cdk deploy` would do: read it, then accept it with
`make snapshot-update` (pytest --snapshot-update)."""

from __future__ import annotations

from typing import Any

import pytest
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension

from tests.support.templates import ASSET_HASH


def mask_asset_hashes(data: Any, path: Any) -> Any:
    """Asset hashes (S3 keys, image tags, asset paths) change with the machine and the wheels
    pip picked; everything else in a template must not."""
    return ASSET_HASH.sub("<asset-hash>", data) if isinstance(data, str) else data


@pytest.fixture
def snapshot_json(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(JSONSnapshotExtension)


@pytest.mark.parametrize("profile", ["dev", "lean", "prod"])
@pytest.mark.parametrize("stack", ["Network", "Data", "Service"])
def test_template_matches_snapshot(
    profile: str, stack: str, request: pytest.FixtureRequest, snapshot_json: SnapshotAssertion
) -> None:
    synth = request.getfixturevalue(profile)
    assert synth.templates()[stack].to_json() == snapshot_json(matcher=mask_asset_hashes)
