#!/usr/bin/env python3
"""CDK entry point: the only place that reads context and environment."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from stacks import outputs
from stacks.config import ConfigError, DeploymentConfig, load_config
from stacks.data import DataStack
from stacks.network import NetworkStack
from stacks.service import ServiceStack
from stacks.util import LambdaRoleDependsOn


def build(app: cdk.App, config: DeploymentConfig) -> tuple[NetworkStack, DataStack, ServiceStack]:
    """The three stacks of one profile, wired together, with cdk-nag as a synth gate."""
    env = cdk.Environment(account=config.account, region=config.region)
    names = outputs.stack_names(config.profile)
    tags = {"Application": outputs.APP_NAME, "Profile": config.profile}
    network = NetworkStack(
        app,
        names.network,
        config=config,
        env=env,
        stack_name=names.network,
        tags=tags,
        description="Conversation service: VPC, subnets, flow logs, endpoints",
    )
    data = DataStack(
        app,
        names.data,
        config=config,
        vpc=network.vpc,
        secrets_endpoint=network.secrets_endpoint,
        env=env,
        stack_name=names.data,
        tags=tags,
        description="Conversation service: PostgreSQL 18 with pgvector, secrets, schema (stateful)",
    )
    service = ServiceStack(
        app,
        names.service,
        config=config,
        vpc=network.vpc,
        database=data.database,
        app_secret=data.database.app_secret,
        alarm_topic=data.alarms,
        env=env,
        stack_name=names.service,
        tags=tags,
        description="Conversation service: ECS Fargate behind an ALB, scaling, alarms",
    )
    cdk.Aspects.of(app).add(LambdaRoleDependsOn())
    # Every AwsSolutions finding fails synth unless acknowledged, with a reason, on its construct.
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return network, data, service


def cdk_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment the config reads, with the CLI's region fallback undone: with no region
    configured anywhere (no AWS_REGION or AWS_DEFAULT_REGION, none in the AWS profile), the CDK
    CLI still sets CDK_DEFAULT_REGION=us-east-1; the stacks then target the README's default
    region instead. Read from the local AWS config files only: synth makes no network call."""
    import botocore.exceptions
    import botocore.session

    env = dict(environ)
    try:
        # botocore reads the profile (AWS_PROFILE) and its config file as the CLI does.
        configured = botocore.session.Session().get_config_variable("region")
    except botocore.exceptions.ProfileNotFound:
        configured = None
    if not (configured or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")):
        env.pop("CDK_DEFAULT_REGION", None)
    return env


def main() -> None:
    app = cdk.App()
    context = app.node.get_all_context()
    try:
        config = load_config(context, cdk_environment(os.environ))
    except ConfigError as exc:
        # One line that names the key, not a traceback through jsii.
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    build(app, config)
    app.synth()


if __name__ == "__main__":
    main()
