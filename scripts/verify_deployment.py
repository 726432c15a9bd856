#!/usr/bin/env python3
"""Post-deploy verification: the command (``make verify``, ``make preflight``). The checks live in
``scripts/verify/``; every name this module offered before the split is importable from it."""

from __future__ import annotations

import sys

from scripts.verify.aws import Aws, _cluster, _parameter, _untrusted_ca, aws_checks, load_stack_outputs
from scripts.verify.checks import (
    FAIL,
    PASS,
    SKIP,
    Check,
    CheckFailed,
    CheckSkipped,
    Target,
    expected_schema_version,
    render_table,
    report,
    run_checks,
)
from scripts.verify.cli import main, resolve_target, verify
from scripts.verify.http import Http, http_checks, round_trip
from scripts.verify.preflight import preflight_checks

__all__ = [
    "FAIL",
    "PASS",
    "SKIP",
    "Aws",
    "Check",
    "CheckFailed",
    "CheckSkipped",
    "Http",
    "Target",
    "_cluster",
    "_parameter",
    "_untrusted_ca",
    "aws_checks",
    "expected_schema_version",
    "http_checks",
    "load_stack_outputs",
    "main",
    "preflight_checks",
    "render_table",
    "report",
    "resolve_target",
    "round_trip",
    "run_checks",
    "verify",
]

if __name__ == "__main__":
    sys.exit(main())
