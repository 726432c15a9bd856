"""service/Dockerfile builds either task architecture on any machine, without emulation.

There is no Docker engine here, so the Dockerfile's one command is replayed as written: the
dependency stage's RUN, with TARGETARCH set as BuildKit sets it, on this machine's own pip. What
it installs must be the target's binaries; the final stage must run nothing (a RUN there would
need QEMU on a machine of the other architecture)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.infra.conftest import ROOT, Synth

DOCKERFILE = ROOT / "service" / "Dockerfile"
# ELF e_machine values
ELF_MACHINE = {"amd64": 62, "arm64": 183}


def stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined, comments dropped), by stage."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    result: list[list[str]] = []
    for instruction in instructions:
        if instruction.startswith("FROM "):
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def test_the_final_stage_runs_no_command_and_the_dependencies_build_natively() -> None:
    dependencies, final = stages()
    assert dependencies[0].startswith("FROM --platform=$BUILDPLATFORM ")
    assert "ARG TARGETARCH" in dependencies
    assert not [i for i in final if i.startswith("RUN ")], "a RUN in the final stage needs emulation for arm64"
    assert "COPY --from=dependencies /opt/deps /opt/deps" in final
    assert "USER 10001:10001" in final


def elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", path
    return int.from_bytes(header[18:20], "little")


@pytest.mark.parametrize("target", ["arm64", "amd64"])
def test_the_dependency_stage_installs_the_targets_binaries(target: str, tmp_path: Path) -> None:
    (run,) = [i for i in stages()[0] if i.startswith("RUN ")]
    script = (
        run.removeprefix("RUN ")
        .replace("pip install", f"{sys.executable} -m pip --disable-pip-version-check install --quiet")
        .replace("/opt/deps", str(tmp_path / "deps"))
        .replace("/tmp/requirements.txt", str(ROOT / "service" / "requirements.txt"))
    )
    done = subprocess.run(
        ["sh", "-c", script], env={"TARGETARCH": target, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    deps = tmp_path / "deps"
    installed = {p.name.split("-")[0].lower() for p in deps.glob("*.dist-info")}
    wanted = {
        line.split("==")[0].split("[")[0].lower().replace("-", "_")
        for line in (ROOT / "service" / "requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert wanted <= installed
    binaries = [p for p in deps.rglob("*.so*") if p.is_file()]
    assert len(binaries) > 5  # pydantic-core, psycopg's libpq, uvloop, httptools, orjson
    wrong = [p.relative_to(deps).as_posix() for p in binaries if elf_machine(p) != ELF_MACHINE[target]]
    assert wrong == []


def test_each_profile_builds_the_image_for_its_task_architecture(dev: Synth, lean: Synth) -> None:
    for synth, cpu, platform in ((dev, "X86_64", "linux/amd64"), (lean, "ARM64", "linux/arm64")):
        (task,) = synth.service.find_resources("AWS::ECS::TaskDefinition").values()
        assert task["Properties"]["RuntimePlatform"]["CpuArchitecture"] == cpu
        (manifest,) = synth.outdir.glob("*-Service.assets.json")
        images = json.loads(manifest.read_text())["dockerImages"]
        assert [image["source"]["platform"] for image in images.values()] == [platform]
