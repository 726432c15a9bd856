#!/usr/bin/env python3
"""Post-deploy verification: is the deployed conversation service healthy, and if not, why?

Finds everything from the stack outputs (names shared with the stacks via stacks/outputs.py):

    python scripts/verify_deployment.py --profile dev              # stacks by name, via boto3
    python scripts/verify_deployment.py --outputs-file cdk-outputs-dev.json
    python scripts/verify_deployment.py --url http://127.0.0.1:8080 --token ...   # no AWS at all

Prints one table (check, result, detail, time), or JSON with --json; exits 0 only when every
check passed. --wait SECONDS re-checks until everything passes or the time is up, showing
progress, so it can follow a deploy that is still settling. --read-only skips the write round
trip (for production). Never prints the API token or any secret value.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from stacks import outputs  # pure Python: no CDK needed

from .aws import Aws, aws_checks, load_stack_outputs
from .checks import FAIL, Check, Target, expected_schema_version, report, run_checks
from .http import http_checks
from .preflight import preflight_checks


def verify(
    target: Target,
    *,
    aws: Aws | None,
    read_only: bool = False,
    wait: float = 0,
    progress: Callable[[str], None] | None = None,
) -> list[Check]:
    schema_version = expected_schema_version()
    if target.output(outputs.SCHEMA_VERSION):
        schema_version = int(target.output(outputs.SCHEMA_VERSION) or 0)
    deadline = time.monotonic() + wait
    attempt = 0
    while True:
        attempt += 1
        checks: list[tuple[str, Callable[[], str]]] = []
        if aws is not None:
            checks += list(aws_checks(aws, target))
        checks += list(http_checks(target, read_only=read_only, schema_version=schema_version))
        results = run_checks(checks)
        failing = [r for r in results if r.result == FAIL]
        left = deadline - time.monotonic()
        if not failing or left <= 0:
            return results
        if progress:
            progress(
                f"attempt {attempt}: {len(failing)} failing ({', '.join(r.name for r in failing)}); "
                f"retrying for {left:.0f}s more"
            )
        time.sleep(min(15.0, max(1.0, left)))


def resolve_target(args: argparse.Namespace, aws: Aws | None) -> Target:
    stack_outputs: dict[str, dict[str, str]] = {}
    if args.outputs_file:
        try:
            stack_outputs = json.loads(Path(args.outputs_file).read_text())
        except (OSError, ValueError) as exc:
            raise SystemExit(f"cannot read outputs file {args.outputs_file}: {exc}") from None
    elif aws is not None:
        stack_outputs = load_stack_outputs(aws, args.profile)
    target = Target(url=args.url or "", profile=args.profile, stack_outputs=stack_outputs)
    if not target.url:
        target.url = target.output(outputs.SERVICE_URL) or ""
    if not target.url:
        raise SystemExit("no service URL: pass --url, or deploy the stacks (output ServiceUrl)")
    target.token = args.token or os.environ.get("API_TOKEN") or None
    if target.token is None and aws is not None and target.output(outputs.API_TOKEN_SECRET_ARN):
        secret = aws.client("secretsmanager").get_secret_value(SecretId=target.output(outputs.API_TOKEN_SECRET_ARN))
        target.token = secret["SecretString"]
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--outputs-file", help="the JSON written by `cdk deploy --outputs-file`")
    source.add_argument("--url", help="service base URL; with no AWS options, only the HTTP checks run")
    parser.add_argument("--profile", default=None, help="deployment profile whose stacks to check (dev, lean, prod)")
    parser.add_argument("--region", help="AWS region (default: the environment's)")
    parser.add_argument("--token", help="API token (default: API_TOKEN, else the ApiTokenSecretArn secret)")
    parser.add_argument("--read-only", action="store_true", help="skip the write round trip (production)")
    parser.add_argument(
        "--wait",
        type=float,
        default=0,
        metavar="SECONDS",
        help="keep re-checking for up to SECONDS while a deploy settles",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument(
        "--preflight",
        action="store_true",
        help="before a first deploy: credentials, region, CDK bootstrap, the ECS service-linked role, Docker, "
        "the certificate",
    )
    parser.add_argument("--certificate-arn", help="with --preflight: the certificateArn you will deploy with")
    args = parser.parse_args(argv)
    if args.wait < 0:
        parser.error("--wait must not be negative")
    if args.preflight and (args.url or args.outputs_file):
        parser.error("--preflight checks the account, not a deployment: it takes no --url or --outputs-file")

    local = bool(args.url) and not args.profile and not args.outputs_file
    aws = None
    if not local:
        import boto3

        args.profile = args.profile or "dev"
        # The region as the CDK CLI resolves it: AWS_REGION first (boto3 alone reads only
        # AWS_DEFAULT_REGION and the profile), so preflight and verify look where cdk deploys.
        aws = Aws(boto3.session.Session(region_name=args.region or os.environ.get("AWS_REGION") or None))
    if args.preflight:
        assert aws is not None
        from scripts.restore import CDK_JSON

        # The context make deploy deploys with: cdk.json's (its -c flags are the certificate,
        # domain name and alarm e-mail, none of which is a setting compared here).
        context = json.loads(CDK_JSON.read_text()).get("context", {})
        checks = list(
            preflight_checks(aws, profile=args.profile, certificate_arn=args.certificate_arn, context=context)
        )
        return report(run_checks(checks), args.json, url=None)
    if aws is not None and aws.session.get_credentials() is None:
        print(
            "no AWS credentials found: run `aws configure` or `aws sso login` (or set AWS_PROFILE), "
            "or pass --url to run only the HTTP checks",
            file=sys.stderr,
        )
        return 2
    target = resolve_target(args, aws)
    results = verify(
        target,
        aws=aws,
        read_only=args.read_only,
        wait=args.wait,
        progress=None if args.json else lambda line: print(line, file=sys.stderr, flush=True),
    )
    return report(results, args.json, url=target.url)
