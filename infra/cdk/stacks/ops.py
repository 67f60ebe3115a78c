"""Operations: one CloudWatch dashboard and the alarms docs/runbook.md explains, all to the platform's
alarm topic (PlatformStack.alarm_topic; subscribe people or a pager to it).

Alarms (names `ragline-<stage>-<what>`, each in the runbook):
- `dlq-<queue>`: any message in a dead-letter queue (a message failed `maxReceiveCount` times);
- `api-5xx-rate`: more than `ops.api5xxRatePercent` % of API requests answered 5xx for 3 of 5 minutes;
- `api-p99-latency`: p99 API latency above `ops.apiP99LatencyMs` for 3 of 5 minutes;
- `saga-<machine>-failed`: any failed, timed-out or aborted execution of a saga state machine;
- `reconcile-findings`: a reconciler run found orphaned vectors, a phantom document or an owed event,
  or could not repair one (none should ever exist: docs/saga.md, "Reconciliation").

Built from the topology and the other stacks: a queue added to the topology gets its DLQ alarm and
its dashboard lines without edits here.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration, Stack
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.cdk.config import DeployConfig
from infra.cdk.naming import pascal, resource_name
from infra.cdk.stacks.models import VARIANT, ModelsStack
from infra.cdk.stacks.platform import PlatformStack
from ragline.contracts import ChunksReady
from ragline.endpoints.breaker import METRIC_NAME as BREAKER_METRIC
from ragline.observability import NAMESPACE
from ragline.topology import POINT_TO_POINT, TOPOLOGY

PERIOD = Duration.minutes(1)


# What ingest-reconcile publishes per run in repair mode (functions/ingest/handlers/reconcile.py).
RECONCILE_METRICS = ("OrphanedVersions", "PhantomDocuments", "RepairsFailed", "UnpublishedEvents")


def reconcile_findings() -> cloudwatch.MathExpression:
    """The sum of what the reconciler's scheduled (repair) runs found, per hour."""
    using = {
        name.lower(): cloudwatch.Metric(
            namespace=NAMESPACE,
            metric_name=name,
            dimensions_map={"service": "ingest-reconcile", "mode": "repair"},
            statistic="Maximum",
            period=Duration.hours(1),
        )
        for name in RECONCILE_METRICS
    }
    return cloudwatch.MathExpression(
        expression=" + ".join(using),
        using_metrics=using,
        label="reconciler findings",
        period=Duration.hours(1),
    )


def circuit_breakers() -> cloudwatch.MathExpression:
    """Every process's breaker state per endpoint (ragline/endpoints/breaker.py emits
    CircuitBreakerState on each change, with its endpoint and the function's service as dimensions).
    A SEARCH finds them whatever functions call endpoints; dashboards take it, alarms do not."""
    return cloudwatch.MathExpression(
        expression=f"SEARCH('{{{NAMESPACE},endpoint,service}} MetricName=\"{BREAKER_METRIC}\"', 'Maximum', 60)",
        using_metrics={},
        label="breaker state",
        period=PERIOD,
    )


class OpsStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeployConfig,
        platform: PlatformStack,
        api: apigateway.RestApi,
        models: ModelsStack,
        state_machines: Mapping[str, sfn.StateMachine],
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.prefix = resource_name(config.stage)
        self.action = actions.SnsAction(platform.alarm_topic)
        self.alarms: dict[str, cloudwatch.Alarm] = {}

        api_errors = self._api_alarms(config, api)
        for spec in TOPOLOGY.queues:
            self._alarm(
                f"dlq-{spec.name}",
                platform.dead_letter_queues[spec.name].metric_approximate_number_of_messages_visible(
                    period=PERIOD, statistic="Maximum"
                ),
                threshold=0,
                description=f"Messages in the {spec.name} dead-letter queue (docs/runbook.md#dead-letter-queues)",
            )
        for name, machine in state_machines.items():
            failed = cloudwatch.MathExpression(
                expression="failed + timedout + aborted",
                using_metrics={
                    "failed": machine.metric_failed(period=Duration.minutes(5)),
                    "timedout": machine.metric_timed_out(period=Duration.minutes(5)),
                    "aborted": machine.metric_aborted(period=Duration.minutes(5)),
                },
                label=f"{name} failed",
                period=Duration.minutes(5),
            )
            self._alarm(
                f"saga-{name}-failed",
                failed,
                threshold=0,
                description=f"A {name} execution failed, timed out or was aborted (docs/runbook.md#saga-failures)",
            )

        self._alarm(
            "reconcile-findings",
            reconcile_findings(),
            threshold=0,
            description="The reconciler found what a saga left behind (docs/runbook.md#reconcile-findings)",
        )

        self.dashboard = cloudwatch.Dashboard(self, "Dashboard", dashboard_name=self.prefix)
        self._dashboard(api, api_errors, platform, models, state_machines)

    def _alarm(
        self,
        name: str,
        metric: cloudwatch.IMetric,
        *,
        threshold: float,
        description: str,
        evaluation_periods: int = 1,
        datapoints_to_alarm: int = 1,
    ) -> cloudwatch.Alarm:
        alarm = cloudwatch.Alarm(
            self,
            f"{pascal(name)}Alarm",
            alarm_name=f"{self.prefix}-{name}",
            alarm_description=description,
            metric=metric,
            threshold=threshold,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=evaluation_periods,
            datapoints_to_alarm=datapoints_to_alarm,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(self.action)
        alarm.add_ok_action(self.action)
        self.alarms[name] = alarm
        return alarm

    def _api_alarms(self, config: DeployConfig, api: apigateway.RestApi) -> cloudwatch.MathExpression:
        rate = cloudwatch.MathExpression(
            expression="IF(requests > 0, 100 * errors / requests, 0)",
            using_metrics={
                "errors": api.metric_server_error(period=PERIOD, statistic="Sum"),
                "requests": api.metric_count(period=PERIOD, statistic="Sum"),
            },
            label="5xx %",
            period=PERIOD,
        )
        self._alarm(
            "api-5xx-rate",
            rate,
            threshold=config.ops.api_5xx_rate_percent,
            description="API 5xx responses above the threshold (docs/runbook.md#api-5xx-rate)",
            evaluation_periods=5,
            datapoints_to_alarm=3,
        )
        self._alarm(
            "api-p99-latency",
            api.metric_latency(period=PERIOD, statistic="p99"),
            threshold=config.ops.api_p99_latency_ms,
            description="API p99 latency above the threshold (docs/runbook.md#api-p99-latency)",
            evaluation_periods=5,
            datapoints_to_alarm=3,
        )
        return rate

    def _dashboard(
        self,
        api: apigateway.RestApi,
        api_errors: cloudwatch.MathExpression,
        platform: PlatformStack,
        models: ModelsStack,
        state_machines: Mapping[str, sfn.StateMachine],
    ) -> None:
        def graph(title: str, metrics: list[cloudwatch.IMetric], width: int = 8) -> cloudwatch.GraphWidget:
            return cloudwatch.GraphWidget(title=title, left=metrics, width=width, height=6)

        queues, dlqs = platform.queues, platform.dead_letter_queues
        index_queue = queues[POINT_TO_POINT[ChunksReady.DETAIL_TYPE]]
        endpoint_metrics = {
            name: {
                "EndpointName": endpoint.endpoint_name,
                "VariantName": VARIANT,
            }
            for name, endpoint in models.endpoints.items()
        }
        self.dashboard.add_widgets(
            graph("API requests", [api.metric_count(period=PERIOD, statistic="Sum")]),
            graph(
                "API latency (ms)",
                [api.metric_latency(period=PERIOD, statistic=s) for s in ("p50", "p90", "p99")],
            ),
            graph(
                "API errors",
                [
                    api.metric_client_error(period=PERIOD, statistic="Sum"),
                    api.metric_server_error(period=PERIOD, statistic="Sum"),
                    api_errors,
                ],
            ),
        )
        self.dashboard.add_widgets(
            graph(
                "Queue depth (visible messages)",
                [
                    q.metric_approximate_number_of_messages_visible(period=PERIOD, label=n)
                    for n, q in queues.items()
                ],
            ),
            graph(
                "Oldest message age (s)",
                [
                    q.metric_approximate_age_of_oldest_message(period=PERIOD, label=n)
                    for n, q in queues.items()
                ],
            ),
            graph(
                "Dead-letter queues (visible messages)",
                [
                    q.metric_approximate_number_of_messages_visible(
                        period=PERIOD, statistic="Maximum", label=n
                    )
                    for n, q in dlqs.items()
                ],
            ),
        )
        self.dashboard.add_widgets(
            graph(
                "Ingestion rate (documents handed to the index worker per minute)",
                [
                    index_queue.metric_number_of_messages_deleted(
                        period=PERIOD, statistic="Sum", label="indexed"
                    )
                ],
            ),
            graph(
                "Model endpoint latency (ms)",
                [
                    cloudwatch.Metric(
                        namespace="AWS/SageMaker",
                        metric_name="ModelLatency",
                        dimensions_map=dims,
                        statistic="p99",
                        period=PERIOD,
                        label=f"{name} p99",
                    )
                    for name, dims in endpoint_metrics.items()
                ],
            ),
            graph(
                "Model endpoint errors and invocations",
                [
                    cloudwatch.Metric(
                        namespace="AWS/SageMaker",
                        metric_name=metric,
                        dimensions_map=dims,
                        statistic="Sum",
                        period=PERIOD,
                        label=f"{name} {metric}",
                    )
                    for name, dims in endpoint_metrics.items()
                    for metric in ("Invocations", "Invocation5XXErrors", "InvocationModelErrors")
                ],
            ),
        )
        self.dashboard.add_widgets(
            graph(
                "Model endpoint circuit breakers (0 closed, 1 half-open, 2 open)",
                [circuit_breakers()],
                width=12,
            ),
            graph(
                "Reconciler findings",
                [reconcile_findings()],
                width=12,
            ),
        )
        self.dashboard.add_widgets(
            graph(
                "Sagas",
                [
                    m
                    for name, machine in state_machines.items()
                    for m in (
                        machine.metric_succeeded(period=Duration.minutes(5), label=f"{name} succeeded"),
                        machine.metric_failed(period=Duration.minutes(5), label=f"{name} failed"),
                    )
                ],
                width=12,
            ),
            cloudwatch.AlarmStatusWidget(
                title="Alarms", alarms=list(self.alarms.values()), width=12, height=6
            ),
        )
