"""Monitoring: the service's and the database's alarms, to the alarm topic, and the dashboard."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from constructs import Construct

from .alarms import ABOVE, BELOW, AlarmTopic
from .api_service import ConversationService
from .config import AlarmsConfig
from .database import Database

REPLICA_LAG_ALARM_S = 60
DEPLOYMENT_ERROR_PERCENT = 10


class Monitoring(Construct):
    """Alarms to an SNS topic, and a dashboard."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: AlarmsConfig,
        service: ConversationService,
        database: Database,
        alarm_topic: AlarmTopic,
    ) -> None:
        super().__init__(scope, construct_id)
        alb = service.load_balancer.metrics
        tg = service.target_group.metrics
        one_min, five_min = cdk.Duration.minutes(1), cdk.Duration.minutes(5)
        error_rate = cloudwatch.MathExpression(
            expression="100 * IF(requests > 0, errors / requests, 0)",
            using_metrics={
                "errors": tg.http_code_target(elbv2.HttpCodeTarget.TARGET_5XX_COUNT, period=five_min),
                "requests": tg.request_count(period=five_min),
            },
            label="5xx rate (%)",
            period=five_min,
        )
        p99 = tg.target_response_time(period=five_min, statistic="p99")
        unhealthy = tg.unhealthy_host_count(period=one_min, statistic="Maximum")
        healthy = tg.healthy_host_count(period=one_min, statistic="Minimum")
        elb_5xx = alb.http_code_elb(elbv2.HttpCodeElb.ELB_5XX_COUNT, period=five_min, statistic="Sum")
        target = database.target
        db_cpu = target.metric_cpu_utilization(period=five_min)
        connections = target.metric_database_connections(period=five_min, statistic="Maximum")
        # An instance's storage runs out; an Aurora cluster's grows by itself, but its capacity
        # stops at maxAcu: the alarm that matters is the one before that.
        if database.instance is not None:
            storage = database.instance.metric_free_storage_space(period=five_min, statistic="Minimum")
        else:
            storage = target.metric("ACUUtilization", period=five_min, statistic="Maximum")
        breaching = cloudwatch.TreatMissingData.BREACHING

        def alarm(
            name: str,
            metric: cloudwatch.IMetric,
            threshold: float,
            description: str,
            comparison: cloudwatch.ComparisonOperator = ABOVE,
            periods: int = 2,
            missing: cloudwatch.TreatMissingData = cloudwatch.TreatMissingData.NOT_BREACHING,
        ) -> cloudwatch.Alarm:
            return alarm_topic.alarm(
                metric,
                name,
                description,
                threshold=threshold,
                scope=self,
                comparison=comparison,
                periods=periods,
                missing=missing,
            )

        self.alarms = [
            alarm("ServerErrorRate", error_rate, 1, "More than 1% of requests answered 5xx"),
            alarm("LatencyP99", p99, 1.0, "p99 target response time above 1 s"),
            alarm("UnhealthyHosts", unhealthy, 0, "A target failed the /health/live check"),
            # A total outage: with no healthy target the target metrics stop, so missing data
            # must count as breaching, or the alarm would sit in OK while nothing answers.
            alarm(
                "NoHealthyHosts",
                healthy,
                1,
                "No healthy target behind the load balancer: the service is down",
                comparison=BELOW,
                missing=breaching,
            ),
            # The load balancer's own 5xx (502/503/504): what callers get when no task answers.
            alarm("LoadBalancer5xx", elb_5xx, 5, "The load balancer answered 5xx itself (no task answered)", periods=1),
            alarm("DatabaseCpu", db_cpu, 80, "RDS CPU above 80%", periods=3),
            (
                alarm(
                    "DatabaseFreeStorage",
                    storage,
                    2 * 1024**3,
                    "RDS free storage below 2 GiB",
                    comparison=BELOW,
                )
                if database.instance is not None
                else alarm(
                    "DatabaseCapacity",
                    storage,
                    90,
                    f"Aurora capacity above 90% of maxAcu ({database.config.max_acu:g} ACUs): raise maxAcu",
                    periods=3,
                )
            ),
            alarm(
                "DatabaseConnections",
                connections,
                config.db_connections,
                f"More than {config.db_connections} database connections",
            ),
        ]
        # What a broken release shows within minutes: its tasks pass /health/live (which never
        # touches the database) but answer 5xx on the data routes. ECS watches this alarm during
        # each deployment and its bake time and rolls back to the previous task definition.
        one_min_errors = cloudwatch.MathExpression(
            expression="IF(requests >= 10, 100 * (errors + lb_errors) / requests, 0)",
            using_metrics={
                "errors": tg.http_code_target(elbv2.HttpCodeTarget.TARGET_5XX_COUNT, period=one_min),
                "lb_errors": alb.http_code_elb(elbv2.HttpCodeElb.ELB_5XX_COUNT, period=one_min),
                "requests": tg.request_count(period=one_min),
            },
            label="5xx rate, 1 minute (%)",
            period=one_min,
        )
        self.deployment_alarm = alarm(
            "DeploymentErrors",
            one_min_errors,
            DEPLOYMENT_ERROR_PERCENT,
            f"More than {DEPLOYMENT_ERROR_PERCENT}% of requests answered 5xx for 2 minutes: "
            "during a deployment, ECS rolls it back",
        )
        self.alarms.append(self.deployment_alarm)
        service.service.enable_deployment_alarms(
            [self.deployment_alarm.alarm_name], behavior=ecs.AlarmBehavior.ROLLBACK_ON_ALARM
        )
        for n, replica in enumerate(database.replicas, start=1):
            # The service reads the writer while a replica is behind (READ_WAIT_MS), so lag costs
            # the writer its offload; a replica that stays minutes behind is broken or too small.
            lag = replica.metric("ReplicaLag", period=five_min, statistic="Maximum")
            self.alarms.append(
                alarm(
                    f"Replica{n}Lag",
                    lag,
                    REPLICA_LAG_ALARM_S,
                    f"Read replica {n} more than {REPLICA_LAG_ALARM_S} s behind the writer for 10 minutes",
                    missing=breaching,
                )
            )
        if service.config.container_insights:
            # Container Insights publishes the service's running and desired task counts.
            dimensions = {
                "ClusterName": service.cluster.cluster_name,
                "ServiceName": service.service.service_name,
            }
            tasks = {
                key: cloudwatch.Metric(
                    namespace="ECS/ContainerInsights",
                    metric_name=name,
                    dimensions_map=dimensions,
                    statistic="Average",
                    period=five_min,
                )
                for key, name in (("running", "RunningTaskCount"), ("desired", "DesiredTaskCount"))
            }
            missing_tasks = cloudwatch.MathExpression(
                expression="desired - running", using_metrics=tasks, label="Tasks missing", period=five_min
            )
            self.alarms.append(
                alarm(
                    "TasksBelowDesired",
                    missing_tasks,
                    0,
                    "Fewer tasks running than desired for 10 minutes (tasks fail to start or keep crashing)",
                    missing=breaching,
                )
            )

        self.dashboard = cloudwatch.Dashboard(self, "Dashboard", default_interval=cdk.Duration.hours(3))
        self.dashboard.add_widgets(
            cloudwatch.AlarmStatusWidget(title="Alarms", alarms=self.alarms, width=24, height=3),
            cloudwatch.GraphWidget(
                title="Requests", left=[alb.request_count(period=cdk.Duration.minutes(1))], right=[error_rate], width=12
            ),
            cloudwatch.GraphWidget(
                title="Latency (s)",
                left=[tg.target_response_time(statistic="p50"), tg.target_response_time(statistic="p99")],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Tasks: CPU and memory (%)",
                left=[service.service.metric_cpu_utilization(), service.service.metric_memory_utilization()],
                width=12,
            ),
            cloudwatch.GraphWidget(title="Targets", left=[tg.healthy_host_count(), unhealthy], width=12),
            cloudwatch.GraphWidget(
                title="Database CPU (%) and connections", left=[db_cpu], right=[connections], width=12
            ),
            cloudwatch.GraphWidget(
                title="Database free storage (bytes)"
                if database.instance is not None
                else "Aurora capacity (% of maxAcu)",
                left=[storage],
                width=12,
            ),
        )
