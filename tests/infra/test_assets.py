"""The schema Lambda's bundle: psycopg's binary for the Lambda platform, the migrations and
the handler, and no web framework."""

from __future__ import annotations

from pathlib import Path

from stacks.schema import HANDLER_MODULES, MIGRATIONS_DIR


def lambda_bundle(synth) -> Path:
    template = synth.data.to_json()
    (handler,) = [
        r
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Lambda::Function"
        and r["Properties"].get("Handler") == "conversations.cfn_handler.handler"
    ]
    return synth.outdir / handler["Metadata"]["aws:asset:path"]


def test_bundle_has_handler_migrations_and_lambda_platform_psycopg(dev, capsys):
    bundle = lambda_bundle(dev)
    names = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    for module in HANDLER_MODULES:
        assert f"conversations/{module}" in names
    assert {f"migrations/{p.name}" for p in MIGRATIONS_DIR.glob("*.sql")} <= names
    binaries = [n for n in names if n.startswith("psycopg_binary/") and n.endswith(".so")]
    assert binaries and all("x86_64-linux-gnu" in n or "pq" in n for n in binaries)
    assert any("cpython-314-x86_64-linux-gnu" in n for n in binaries)
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    with capsys.disabled():
        print(f"\n  schema Lambda bundle: {len(names)} files, {size / 1024 / 1024:.1f} MiB unzipped")
    assert size < 50 * 1024 * 1024  # far below Lambda's 250 MB limit


def test_bundle_has_no_web_framework(dev):
    bundle = lambda_bundle(dev)
    top = {p.name.split("-")[0].lower() for p in bundle.iterdir()}
    assert not top & {"fastapi", "starlette", "uvicorn", "pydantic", "pydantic_core", "anyio"}
    assert not (bundle / "conversations" / "api.py").exists()
    assert not list(bundle.rglob("__pycache__"))
