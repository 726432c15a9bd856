"""The schema Lambda's bundle: psycopg's binary for the Lambda platform, the migrations and
the handler, and no web framework."""

from __future__ import annotations

from pathlib import Path

import pytest

from stacks.schema import HANDLER_FILES, MIGRATIONS_DIR
from tests.infra.conftest import Synth


def lambda_bundle(synth: Synth) -> Path:
    template = synth.data.to_json()
    (handler,) = [
        r
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Lambda::Function"
        and r["Properties"].get("Handler") == "conversations.cfn_handler.handler"
    ]
    return synth.outdir / str(handler["Metadata"]["aws:asset:path"])


def test_bundle_has_handler_migrations_and_lambda_platform_psycopg(
    dev: Synth, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = lambda_bundle(dev)
    names = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    for module in HANDLER_FILES:
        assert f"conversations/{module}" in names
    assert {f"migrations/{p.name}" for p in MIGRATIONS_DIR.glob("*.sql")} <= names
    binaries = [n for n in names if n.startswith("psycopg_binary/") and n.endswith(".so")]
    assert binaries and all("x86_64-linux-gnu" in n or "pq" in n for n in binaries)
    assert any("cpython-314-x86_64-linux-gnu" in n for n in binaries)
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    with capsys.disabled():
        print(f"\n  schema Lambda bundle: {len(names)} files, {size / 1024 / 1024:.1f} MiB unzipped")
    assert size < 50 * 1024 * 1024  # far below Lambda's 250 MB limit


def test_bundle_has_no_web_framework(dev: Synth) -> None:
    bundle = lambda_bundle(dev)
    top = {p.name.split("-")[0].lower() for p in bundle.iterdir()}
    assert not top & {"fastapi", "starlette", "uvicorn", "pydantic", "pydantic_core", "anyio"}
    assert not (bundle / "conversations" / "api.py").exists()
    assert not list(bundle.rglob("__pycache__"))


def asset_hashes(synth: Synth) -> dict[str, str]:
    """Every file asset and image asset of the Data and Service stacks, by asset id."""
    import json

    hashes = {}
    for manifest in synth.outdir.glob("*.assets.json"):
        data = json.loads(manifest.read_text())
        for kind in ("files", "dockerImages"):
            for asset_id, asset in data.get(kind, {}).items():
                hashes[f"{kind}:{asset['source'].get('path', asset_id)}"] = asset_id
    return hashes


def image_context(synth: Synth) -> Path:
    (path,) = {p.parent for p in synth.outdir.glob("asset.*/Dockerfile") if (p.parent / "conversations").is_dir()}
    return path


def test_untracked_files_under_service_never_reach_an_asset(dev: Synth) -> None:
    """A local database under service/.local (46 MB, a stale postmaster.pid) once rode into both
    assets and changed their hashes on every synth."""
    import shutil

    from stacks.schema import SERVICE_DIR
    from tests.infra.conftest import synthesize

    before = asset_hashes(dev)
    strays = [
        SERVICE_DIR / ".local" / "pgdata" / "postmaster.pid",
        SERVICE_DIR / "conversations" / ".local" / "pgdata" / "PG_VERSION",
        SERVICE_DIR / "conversations" / "notes.txt",
        SERVICE_DIR / "migrations" / "scratch.sql.bak",
        SERVICE_DIR / "stray.json",
    ]
    created = [p for p in strays if not p.exists()]
    try:
        for path in created:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("not for the assets\n")
        # When the app is synthesized with them present
        again = synthesize("dev")
        # Then no asset changed, and the image context holds only what the image needs
        assert asset_hashes(again) == before
        context = image_context(again)
        files = {p.relative_to(context).as_posix() for p in context.rglob("*") if p.is_file()}
        assert files, "the image context is empty: the allowlist is broken"
        assert not {f for f in files if ".local" in f or f.endswith(("notes.txt", ".bak", ".json"))}
        assert "Dockerfile" in files and "requirements.txt" in files and "conversations/api.py" in files
        assert "conversations/static/index.html" in files and "migrations/0001_vector_extension.sql" in files
        # The RDS certificate authorities the service verifies the database against
        assert "conversations/rds-ca-bundle.pem" in files
    finally:
        for path in created:
            path.unlink()
        for directory in (SERVICE_DIR / ".local", SERVICE_DIR / "conversations" / ".local"):
            shutil.rmtree(directory, ignore_errors=True)
