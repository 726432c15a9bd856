"""Stack names and output keys, shared by the stacks, the verification script and the tests.

Pure Python on purpose: no aws_cdk import, so scripts can use it anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

APP_NAME = "Conversations"


@dataclass(frozen=True)
class StackNames:
    network: str
    data: str
    service: str

    def all(self) -> tuple[str, str, str]:
        return (self.network, self.data, self.service)


def stack_names(profile: str) -> StackNames:
    prefix = f"{APP_NAME}-{profile}"
    return StackNames(network=f"{prefix}-Network", data=f"{prefix}-Data", service=f"{prefix}-Service")


# Output keys (CloudFormation logical ids of the outputs, pinned with override_logical_id).
VPC_ID = "VpcId"
DATABASE_ENDPOINT = "DatabaseEndpoint"
DATABASE_PORT = "DatabasePort"
DATABASE_INSTANCE_ID = "DatabaseInstanceId"  # database=instance only
DATABASE_CLUSTER_ID = "DatabaseClusterId"  # database=aurora-serverless-v2 only
DATABASE_READ_ENDPOINT = "DatabaseReadEndpoint"  # with readers only
DATABASE_PROXY_ENDPOINT = "DatabaseProxyEndpoint"  # with rdsProxy only
RESTORED_FROM = "RestoredFrom"  # after make restore only: the snapshot the database was created from
DATABASE_MULTI_AZ = "DatabaseMultiAz"  # "true" or "false": what verify_deployment.py expects
MASTER_SECRET_ARN = "MasterSecretArn"  # noqa: S105 - an output name, not a secret
APP_SECRET_ARN = "AppSecretArn"  # noqa: S105 - an output name, not a secret
SCHEMA_VERSION = "SchemaVersion"
SERVICE_URL = "ServiceUrl"
LOAD_BALANCER_ARN = "LoadBalancerArn"
TARGET_GROUP_ARN = "TargetGroupArn"
CLUSTER_NAME = "ClusterName"
SERVICE_NAME = "ServiceName"
LOG_GROUP_NAME = "LogGroupName"
API_TOKEN_SECRET_ARN = "ApiTokenSecretArn"  # noqa: S105 - an output name, not a secret
DASHBOARD_NAME = "DashboardName"
ALARM_TOPIC_ARN = "AlarmTopicArn"
PROFILE = "Profile"

NETWORK_OUTPUTS = (VPC_ID,)
DATA_OUTPUTS = (
    DATABASE_ENDPOINT,
    DATABASE_PORT,
    DATABASE_INSTANCE_ID,
    DATABASE_MULTI_AZ,
    MASTER_SECRET_ARN,
    APP_SECRET_ARN,
    SCHEMA_VERSION,
    ALARM_TOPIC_ARN,
)
SERVICE_OUTPUTS = (
    SERVICE_URL,
    LOAD_BALANCER_ARN,
    TARGET_GROUP_ARN,
    CLUSTER_NAME,
    SERVICE_NAME,
    LOG_GROUP_NAME,
    API_TOKEN_SECRET_ARN,
    DASHBOARD_NAME,
    PROFILE,
)
