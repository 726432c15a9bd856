"""What a check is and how the checks run: the result rows, the target's stack outputs, running
each check with its time, the table and the JSON report."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent

MIGRATIONS_DIR = ROOT / "service" / "migrations"
PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


@dataclass
class Check:
    name: str
    result: str
    detail: str
    seconds: float = 0.0
    hint: str = ""


@dataclass
class Target:
    """What to verify: a URL, and the AWS side when there is one."""

    url: str
    profile: str | None = None
    stack_outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    token: str | None = None

    def output(self, key: str) -> str | None:
        for values in self.stack_outputs.values():
            if key in values:
                return values[key]
        return None


class CheckFailed(Exception):
    def __init__(self, detail: str, hint: str = "") -> None:
        super().__init__(detail)
        self.detail = detail
        self.hint = hint


class CheckSkipped(Exception):
    """A check that cannot run because an earlier one failed; the detail says which."""


def expected_schema_version() -> int | None:
    versions = [int(p.name[:4]) for p in MIGRATIONS_DIR.glob("[0-9][0-9][0-9][0-9]_*.sql")]
    return max(versions) if versions else None


def _need(target: Target, key: str) -> str:
    value = target.output(key)
    if not value:
        raise CheckFailed(f"stack output {key} not found", "deploy the stacks, or pass the right --profile")
    return value


def _aws_error(exc: Exception) -> str:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code")
    return code or type(exc).__name__


def run_checks(checks: list[tuple[str, Callable[[], str]]]) -> list[Check]:
    results = []
    for name, fn in checks:
        started = time.monotonic()
        try:
            detail = fn()
            results.append(Check(name, PASS, detail, time.monotonic() - started))
        except CheckFailed as failure:
            results.append(Check(name, FAIL, failure.detail, time.monotonic() - started, failure.hint))
        except CheckSkipped as skipped:
            results.append(Check(name, SKIP, str(skipped), time.monotonic() - started))
        except Exception as exc:  # noqa: BLE001 - an unexpected error is a failed check, with its type
            results.append(
                Check(
                    name,
                    FAIL,
                    f"{type(exc).__name__}: {str(exc)[:200]}",
                    time.monotonic() - started,
                    "unexpected error in the check",
                )
            )
    return results


def render_table(results: list[Check]) -> str:
    rows = [("CHECK", "RESULT", "DETAIL", "TIME")]
    for r in results:
        detail = r.detail if not r.hint or r.result == PASS else f"{r.detail} -> next: {r.hint}"
        rows.append((r.name, r.result, detail, f"{r.seconds:.2f}s"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}" for a, b, c, d in rows]
    passed = sum(r.result == PASS for r in results)
    skipped = sum(r.result == SKIP for r in results)
    failed = len(results) - passed - skipped
    lines.append(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    return "\n".join(lines)


def report(results: list[Check], as_json: bool, *, url: str | None) -> int:
    """Print the results (a table, or JSON); the exit status: 0 only when every check passed."""
    if as_json:
        print(
            json.dumps(
                {"ok": all(r.result == PASS for r in results), "url": url, "checks": [asdict(r) for r in results]},
                indent=2,
            )
        )
    else:
        print(render_table(results))
    return 0 if all(r.result == PASS for r in results) else 1
