"""The alarm topic and the alarms of both stateful and stateless stacks.

The topic lives in the Data stack, which deploys before the Service stack: the schema Lambda
and secret rotation can fail before any service exists, and their alarms need somewhere to go.
"""

from __future__ import annotations

import aws_cdk as cdk
import jsii
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk.interfaces.aws_events import IRuleRef
from constructs import Construct

ABOVE = cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD
BELOW = cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD
# Secrets Manager reports a rotation that failed or was abandoned as a service event.
ROTATION_FAILED_EVENTS = ("RotationFailed", "RotationAbandoned")


@jsii.implements(events.IRuleTarget)
class _TopicTarget:
    """The topic as a rule's target, its permission granted by the topic's own policy (above)."""

    def __init__(self, topic: sns.ITopic) -> None:
        self.topic = topic

    def bind(self, rule: IRuleRef, id: str | None = None) -> events.RuleTargetConfig:
        return events.RuleTargetConfig(arn=self.topic.topic_arn)


class AlarmTopic(Construct):
    """An encrypted SNS topic that CloudWatch alarms and EventBridge may publish to."""

    def __init__(self, scope: Construct, construct_id: str, *, alarm_email: str | None) -> None:
        super().__init__(scope, construct_id)
        key = kms.Key(
            self,
            "TopicKey",
            enable_key_rotation=True,
            description="Encrypts the alarm topic",
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        stack = cdk.Stack.of(self)
        this_account = {"aws:SourceAccount": stack.account}
        # Alarms and event rules publish to an encrypted topic only if they may use its key.
        # CloudWatch's use is tied to this account's alarms (AWS documents source conditions on
        # this grant); EventBridge's cannot be (the key request carries no source keys, so a
        # condition would drop every notification): the topic policy below ties it to our rule.
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AlarmsOfThisAccount",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
                conditions={"StringEquals": this_account},
            )
        )
        key.grant(iam.ServicePrincipal("events.amazonaws.com"), "kms:Decrypt", "kms:GenerateDataKey*")
        self.topic = sns.Topic(self, "Topic", master_key=key, enforce_ssl=True)
        # A topic policy replaces SNS's default one, which let this account's alarms publish:
        # without this statement every alarm action fails ("... alarm:X is not authorized to
        # perform: SNS:Publish") and nobody hears anything. This account's alarms, in this region.
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AlarmsOfThisAccount",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions={
                    "ArnLike": {
                        "aws:SourceArn": stack.format_arn(
                            service="cloudwatch",
                            resource="alarm",
                            resource_name="*",
                            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
                        )
                    },
                    "StringEquals": this_account,
                },
            )
        )
        if alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(alarm_email))
        self.action = cw_actions.SnsAction(self.topic)

    def on_rotation_failure(self, scope: Construct) -> events.Rule:
        """Every failed or abandoned secret rotation in this account and region, to the topic:
        a rotation that fails leaves the old password in place and says so nowhere else."""
        rule = events.Rule(
            scope,
            "RotationFailed",
            description="A Secrets Manager rotation failed: the secret keeps its previous value",
            event_pattern=events.EventPattern(
                source=["aws.secretsmanager"],
                detail_type=["AWS Service Event via CloudTrail"],
                detail={"eventName": list(ROTATION_FAILED_EVENTS)},
            ),
        )
        rule.add_target(_TopicTarget(self.topic))
        # EventBridge may publish for this rule only (confused-deputy prevention): aws-cdk-lib's
        # SnsTopic target would allow events.amazonaws.com for any rule of any account.
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="EventsFromTheRotationRule",
                principals=[iam.ServicePrincipal("events.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions={
                    "ArnEquals": {"aws:SourceArn": rule.rule_arn},
                    "StringEquals": {"aws:SourceAccount": cdk.Stack.of(self).account},
                },
            )
        )
        return rule

    def alarm(
        self,
        metric: cloudwatch.IMetric,
        construct_id: str,
        description: str,
        *,
        threshold: float,
        scope: Construct | None = None,
        comparison: cloudwatch.ComparisonOperator = ABOVE,
        periods: int = 1,
        missing: cloudwatch.TreatMissingData = cloudwatch.TreatMissingData.NOT_BREACHING,
    ) -> cloudwatch.Alarm:
        """An alarm that notifies the topic when it fires and when it clears."""
        created = cloudwatch.Alarm(
            scope or cdk.Stack.of(self),
            construct_id,
            metric=metric,
            threshold=threshold,
            evaluation_periods=periods,
            datapoints_to_alarm=periods,
            comparison_operator=comparison,
            alarm_description=description,
            treat_missing_data=missing,
        )
        created.add_alarm_action(self.action)
        created.add_ok_action(self.action)
        return created
