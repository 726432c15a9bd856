"""Small helpers the stacks share."""

from __future__ import annotations

import aws_cdk as cdk
import jsii
from aws_cdk import aws_logs as logs
from constructs import IConstruct

from .config import LogsConfig

_RETENTION_DAYS = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    120: logs.RetentionDays.FOUR_MONTHS,
    150: logs.RetentionDays.FIVE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    400: logs.RetentionDays.THIRTEEN_MONTHS,
    545: logs.RetentionDays.EIGHTEEN_MONTHS,
    731: logs.RetentionDays.TWO_YEARS,
    1096: logs.RetentionDays.THREE_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
    2192: logs.RetentionDays.SIX_YEARS,
    2557: logs.RetentionDays.SEVEN_YEARS,
    2922: logs.RetentionDays.EIGHT_YEARS,
    3288: logs.RetentionDays.NINE_YEARS,
    3653: logs.RetentionDays.TEN_YEARS,
}


def output(stack: cdk.Stack, key: str, value: str, description: str) -> cdk.CfnOutput:
    """A stack output whose logical id is exactly ``key`` (see stacks/outputs.py)."""
    out = cdk.CfnOutput(stack, key, value=value, description=description)
    out.override_logical_id(key)
    return out


def log_removal(logs: LogsConfig) -> cdk.RemovalPolicy:
    """What deleting a stack does to its log groups: prod keeps them, other profiles clean up."""
    return cdk.RemovalPolicy.RETAIN if logs.retain else cdk.RemovalPolicy.DESTROY


def retention(days: int) -> logs.RetentionDays:
    """The longest CloudWatch retention period that is not longer than ``days``."""
    return _RETENTION_DAYS[max(d for d in _RETENTION_DAYS if d <= max(days, 1))]


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    """Acknowledge one cdk-nag AwsSolutions finding on ``scope`` and its children: a rule
    (``"RDS11"``) or one granular finding (``"IAM5[Resource::*]"``).

    Every acknowledgement states why the finding is acceptable here; tests check that none
    is left without a reason."""
    if len(reason) < 40:
        raise ValueError(f"acknowledging {rule} needs a real reason, got {reason!r}")
    cdk.Validations.of(scope).acknowledge(cdk.Acknowledgment(id=f"AwsSolutions::AwsSolutions-{rule}", reason=reason))


@jsii.implements(cdk.IAspect)
class LambdaRoleDependsOn:
    """Drops the redundant ``DependsOn: <ServiceRole>`` that aws-cdk-lib writes on its Lambda
    functions: the function already reads the role's ARN with ``Fn::GetAtt``, which orders
    them, and cfn-lint rightly warns (W3005). The meaningful dependency, on the role's
    DefaultPolicy (the function must not run before its permissions exist), is kept."""

    def visit(self, node: IConstruct) -> None:
        if not (isinstance(node, cdk.CfnResource) and node.cfn_resource_type == "AWS::Lambda::Function"):
            return
        parent = node.node.scope
        role = parent.node.try_find_child("ServiceRole") if parent is not None else None
        if role is None:
            return
        policy = role.node.try_find_child("DefaultPolicy")
        stack = cdk.Stack.of(node)
        depends_on = []
        if policy is not None and policy.node.default_child is not None:
            depends_on.append(stack.get_logical_id(policy.node.default_child))  # type: ignore[arg-type]
        node.add_override("DependsOn", depends_on)


def checkov_skip(scope: IConstruct, check_id: str, reason: str) -> None:
    """Skip one checkov check on the CloudFormation resource of ``scope``, inline, with the
    reason a reviewer reads in the template (``Metadata.checkov.skip``)."""
    if len(reason) < 30:
        raise ValueError(f"skipping {check_id} needs a real reason, got {reason!r}")
    resource = scope if isinstance(scope, cdk.CfnResource) else scope.node.default_child
    if not isinstance(resource, cdk.CfnResource):
        raise TypeError(f"{scope.node.path} has no CloudFormation resource to annotate")
    current = resource.get_metadata("checkov") or {"skip": []}
    current["skip"].append({"id": check_id, "comment": reason})
    resource.add_metadata("checkov", current)
