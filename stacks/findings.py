"""Every cdk-nag (AwsSolutions) acknowledgement and checkov skip of the stacks, with its reason,
one function per construct: a security reviewer reads them here, in one place.

Each construct calls its function once, after its resources exist. ``acknowledge`` refuses a
reason too short to be one; tests/infra/test_gates.py checks that every acknowledgement is
scoped, reasoned and used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aws_cdk as cdk
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from aws_cdk import custom_resources as cr

from .util import acknowledge, checkov_skip

if TYPE_CHECKING:
    from .api_service import ConversationService
    from .database import Database
    from .schema import SchemaMigrations

LOGS_KMS_REASON = (
    "CloudWatch Logs encrypts every log group at rest with AWS-managed keys; this project never logs "
    "message content, tokens or passwords, so a customer-managed key would add cost without protecting data."
)
NO_CONTAINER_INSIGHTS = (
    "Container Insights is off (the lean profile, or containerInsights=false): it is billed as custom "
    "metrics, about $11 a month for one service, a fifth of the lean budget. The free AWS/ECS CPU and "
    "memory metrics remain, and the NoHealthyHosts alarm (missing data counts as breaching) still "
    "catches a service with no running task; only the TasksBelowDesired alarm is given up."
)


def log_group(group: logs.LogGroup) -> None:
    """A log group: encrypted with CloudWatch Logs' own keys."""
    checkov_skip(group, "CKV_AWS_158", LOGS_KMS_REASON)


def database(database: Database) -> None:
    """The database's instance, replicas, cluster and secrets."""
    config = database.config
    port = (
        "PostgreSQL keeps its default port 5432, which clients and runbooks expect; the database is in "
        "isolated subnets and its security group admits only the service and the schema Lambda, so a "
        "non-default port would add no protection."
    )
    no_protection = (
        "Deletion protection is off only in the dev and lean profiles so 'make destroy' can remove it; the "
        "prod profile enables it and snapshots the database on delete."
    )
    monitoring = (
        "Enhanced monitoring (OS metrics) is not needed for the alarms here: "
        "CPU, storage and connections come from CloudWatch's RDS metrics; Performance Insights covers prod."
    )
    if database.instance is not None:
        instance = database.instance
        if not config.multi_az:
            acknowledge(
                instance,
                "RDS3",
                "Single-AZ only in the dev and lean profiles, to fit a small budget; the prod profile is "
                "Multi-AZ (dbMultiAz=true turns it on for any profile).",
            )
        if not config.deletion_protection:
            acknowledge(instance, "RDS10", no_protection)
        checkov_skip(instance, "CKV_AWS_118", monitoring)
        if not config.multi_az:
            checkov_skip(
                instance,
                "CKV_AWS_157",
                "Single-AZ only in the dev and lean profiles, to fit a small budget; the prod profile is Multi-AZ.",
            )
        acknowledge(instance, "RDS11", port)
    for replica in database.replicas:
        single_az = (
            "A read replica serves only reads that tolerate lag, and the service falls back to the writer "
            "when it is down; durability is the source instance's (Multi-AZ in prod). A Multi-AZ replica "
            "would double its price for no data safety."
        )
        acknowledge(replica, "RDS3", single_az)
        inherited = (
            "A read replica is encrypted because its source is (StorageEncrypted: true on the instance): RDS "
            "gives it the source's encryption and key, and CloudFormation refuses StorageEncrypted beside "
            "SourceDBInstanceIdentifier."
        )
        acknowledge(replica, "RDS2", inherited)
        checkov_skip(replica, "CKV_AWS_16", inherited)
        checkov_skip(replica, "CKV_AWS_157", single_az)
        checkov_skip(replica, "CKV_AWS_118", monitoring)
        acknowledge(replica, "RDS11", port)
        acknowledge(
            replica,
            "RDS10",
            "A read replica holds no data of its own (it replays its source, which has deletion protection "
            "in prod): lowering readers must delete it, and with protection on, the delete fails and the "
            "replica keeps running, billed, outside the template.",
        )
    if database.cluster is not None:
        cluster = database.cluster
        if not config.deletion_protection:
            acknowledge(cluster, "RDS10", no_protection)
        for member in cluster.node.find_all():
            if isinstance(member, rds.CfnDBInstance):
                checkov_skip(member, "CKV_AWS_118", monitoring)
    for secret in (database.master_secret_resource, database.app_secret_resource):
        checkov_skip(
            secret,
            "CKV_AWS_149",
            "Encrypted with Secrets Manager's AWS-managed key; no other account or "
            "service needs to decrypt, so a customer-managed key would add cost and no control.",
        )


def log_retention(stack: cdk.Stack, database: Database) -> None:
    """aws-cdk-lib's LogRetention singleton (it sets the retention of the RDS log groups and of the
    rotation functions' groups)."""
    # aws-cdk-lib's singleton that sets retention on the RDS log groups it exports to.
    log_retention = next(c for c in stack.node.children if c.node.id.startswith("LogRetention"))
    acknowledge(
        log_retention,
        "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
        "aws-cdk-lib's LogRetention function (it sets the retention of the RDS log groups) writes only "
        "its own CloudWatch Logs with this policy.",
    )
    acknowledge(
        log_retention,
        "IAM5[Resource::*]",
        "logs:PutRetentionPolicy and logs:DeleteRetentionPolicy on '*': the RDS log group names are only "
        "known once the instance exists; the function can change retention, never read or delete logs.",
    )
    region = "<AWS::Region>" if cdk.Token.is_unresolved(stack.region) else stack.region
    account = "<AWS::AccountId>" if cdk.Token.is_unresolved(stack.account) else stack.account
    # Only where the groups go with the stack: deleting them is what needs these.
    for name in database.rotation_log_groups if not database.logs_config.retain else []:
        acknowledge(
            log_retention,
            f"IAM5[Resource::arn:<AWS::Partition>:logs:{region}:{account}:log-group:{name}:*]",
            "logs:DeleteLogGroup on the log group of one named rotation function (its streams are the "
            "':*'): the group is removed with the stack, as every other log group of a dev or lean stack.",
        )
    log_function = log_retention.node.find_child("Resource")
    checkov_skip(
        log_function,
        "CKV_AWS_116",
        "aws-cdk-lib's LogRetention custom resource is invoked synchronously "
        "by CloudFormation, which reports failures; a dead-letter queue does not apply.",
    )
    checkov_skip(
        log_function,
        "CKV_AWS_117",
        "aws-cdk-lib's LogRetention function calls only the CloudWatch Logs "
        "API to set retention; it reaches no resource inside the VPC.",
    )
    checkov_skip(
        log_function,
        "CKV_AWS_115",
        "aws-cdk-lib's LogRetention function runs only during deployments, "
        "once per log group; a concurrency cap would add nothing.",
    )
    checkov_skip(
        log_retention.node.find_child("ServiceRole").node.find_child("DefaultPolicy"),
        "CKV_AWS_111",
        "logs:PutRetentionPolicy/DeleteRetentionPolicy on '*' because the RDS log group names exist only "
        "after the instance does; these actions change retention and cannot read or delete logs.",
    )


def schema(migrations: SchemaMigrations, provider: cr.Provider, *, log_groups: tuple[logs.LogGroup, ...]) -> None:
    """The schema custom resource: its handler, the provider framework and their log groups."""
    framework = provider.node.find_child("framework-onEvent")
    for group in log_groups:
        log_group(group)
    for function in (migrations.function, framework):
        checkov_skip(
            function,
            "CKV_AWS_116",
            "CloudFormation invokes custom-resource handlers synchronously and "
            "reports their failure on the stack; a dead-letter queue only applies to async invocations.",
        )
    checkov_skip(
        migrations.function,
        "CKV_AWS_115",
        "No reserved concurrency on purpose: a new account's Lambda quota (often 10) leaves nothing "
        "to reserve and the deploy would fail. CloudFormation invokes it once per deploy, and the "
        "migrator's advisory lock serialises concurrent runs.",
    )
    checkov_skip(
        framework,
        "CKV_AWS_115",
        "The provider framework function comes from aws-cdk-lib and only relays "
        "CloudFormation events; it runs once per stack operation.",
    )
    checkov_skip(
        framework,
        "CKV_AWS_117",
        "The provider framework function calls only the handler and "
        "CloudFormation's pre-signed S3 URL; it has no access to the database and needs no VPC.",
    )
    checkov_skip(
        framework,
        "CKV_AWS_173",
        "Its only environment variable is the ARN of the handler function, "
        "which is not secret; encryption at rest by Lambda's AWS-managed key applies.",
    )

    basic_execution = "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]"
    acknowledge(
        provider,
        basic_execution,
        "The provider framework's role uses AWSLambdaBasicExecutionRole, which only allows writing "
        "its own CloudWatch Logs; it is created and scoped by aws-cdk-lib's custom_resources.Provider.",
    )
    acknowledge(
        provider,
        "IAM5[Resource::<SchemaMigrationsHandler43587043.Arn>:*]",
        "The provider framework may invoke the handler function and its versions (arn:...:function:"
        "name:*); the wildcard is the version qualifier of that single function, not other functions.",
    )
    acknowledge(
        migrations.function,
        "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole]",
        "AWSLambdaVPCAccessExecutionRole is AWS's minimal policy for a VPC Lambda: create and delete "
        "its own network interfaces; no data access.",
    )
    acknowledge(
        migrations.function,
        basic_execution,
        "AWSLambdaBasicExecutionRole only lets the handler write its own CloudWatch Logs; the data it "
        "reads is granted separately on the two named secrets.",
    )


def service(api: ConversationService) -> None:
    """The Fargate service: its task, token, log group, access-log bucket and load balancer."""
    log_group(api.log_group)
    checkov_skip(
        api.api_token,
        "CKV_AWS_149",
        "Encrypted with Secrets Manager's AWS-managed key; only this "
        "account's ECS tasks read it, so a customer-managed key would add cost and no control.",
    )
    checkov_skip(
        api.access_logs,
        "CKV_AWS_18",
        "This bucket receives the load balancer's access logs; logging "
        "access to it would need another bucket with the same finding.",
    )
    checkov_skip(
        api.access_logs,
        "CKV_AWS_21",
        "Access logs are written once and expire after the retention "
        "period; versioning would only keep deleted log objects longer.",
    )
    if not api.config.certificate_arn:
        for check in ("CKV_AWS_2", "CKV_AWS_103"):
            checkov_skip(
                api.listener,
                check,
                "Plain HTTP only until an ACM certificate is configured "
                "(context certificateArn), which turns on HTTPS with a redirect from HTTP.",
            )
    if api.config.open_to_the_internet:
        checkov_skip(
            api.load_balancer_security_group,
            "CKV_AWS_260",
            "The API is a public endpoint guarded by a bearer token; the "
            "allowedCidrs context key narrows the load balancer's ingress to known networks.",
        )
    acknowledge(
        api.task_definition,
        "ECS2",
        "The container's plain environment holds configuration only (port, embedding dimension, "
        "pool size, TLS mode, log level, the app secret's ARN); the database credentials and the API "
        "token are injected from Secrets Manager as ECS secrets.",
    )
    acknowledge(
        api.api_token,
        "SMG4",
        "The API token is a shared bearer credential for the callers of this service: rotating it "
        "on a schedule would lock out every client at once. Operators rotate it deliberately "
        "(put a new value, then force a new ECS deployment), as the README describes.",
    )
    acknowledge(
        api.access_logs,
        "S1",
        "This bucket receives the load balancer's access logs; logging access to the log bucket "
        "itself would need a further bucket with the same finding. It blocks public access, "
        "enforces TLS and expires objects.",
    )
    if api.config.open_to_the_internet:
        acknowledge(
            api.load_balancer_security_group,
            "EC23",
            "The API is a public HTTP endpoint guarded by a bearer token; the allowedCidrs context key "
            "narrows the load balancer's ingress to known networks when callers are not on the internet.",
        )
    if not api.config.container_insights:
        acknowledge(api.cluster, "ECS4", NO_CONTAINER_INSIGHTS)
        checkov_skip(api.cluster, "CKV_AWS_65", NO_CONTAINER_INSIGHTS)
    assert api.task_definition.execution_role is not None
    acknowledge(
        api.task_definition.execution_role,
        "IAM5[Resource::*]",
        "The execution role's wildcards are those ECS needs to pull the image (ecr:GetAuthorizationToken "
        "has no resource-level permissions) and are generated by aws-cdk-lib; data access is granted "
        "on named secrets only.",
    )
