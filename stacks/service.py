"""ServiceStack (stateless): wires the conversation service (api_service.py) and its monitoring
(monitoring.py) to the network and the Data stack's database, and declares the outputs."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from . import outputs
from .alarms import AlarmTopic
from .api_service import ConversationService
from .config import DeploymentConfig
from .database import Database
from .monitoring import Monitoring
from .util import output


class ServiceStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeploymentConfig,
        vpc: ec2.IVpc,
        database: Database,
        app_secret: secretsmanager.ISecret,
        alarm_topic: AlarmTopic,
        **kwargs: object,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        api = ConversationService(
            self,
            "Api",
            config=config.service,
            network=config.network,
            logs_config=config.logs,
            vpc=vpc,
            database=database,
            app_secret=app_secret,
        )
        monitoring = Monitoring(
            self, "Monitoring", config=config.alarms, service=api, database=database, alarm_topic=alarm_topic
        )

        output(self, outputs.SERVICE_URL, api.url, "Base URL of the conversation service")
        output(self, outputs.LOAD_BALANCER_ARN, api.load_balancer.load_balancer_arn, "Load balancer")
        output(self, outputs.TARGET_GROUP_ARN, api.target_group.target_group_arn, "Target group of the tasks")
        output(self, outputs.CLUSTER_NAME, api.cluster.cluster_name, "ECS cluster")
        output(self, outputs.SERVICE_NAME, api.service.service_name, "ECS service")
        output(self, outputs.LOG_GROUP_NAME, api.log_group.log_group_name, "Service log group")
        output(self, outputs.API_TOKEN_SECRET_ARN, api.api_token.secret_arn, "Secret holding the API token")
        output(self, outputs.DASHBOARD_NAME, monitoring.dashboard.dashboard_name, "CloudWatch dashboard")
        output(self, outputs.PROFILE, config.profile, "Deployment profile")
