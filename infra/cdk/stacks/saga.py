"""Saga: the document-delete and document-update state machines (docs/saga.md) over ingest's and
index's saga functions.

Its own stack because it needs functions of both contexts (Ingest → Index → Saga); the ingest API,
which starts executions, knows it by its explicit name (`naming.state_machine_name`), so Ingest does
not depend on this stack. Every task is a Lambda task of the context that owns the data, invoked as
`{"step": <state name>, "saga": <state>}`, retried with backoff on transient errors
(`ragline.saga.TRANSIENT_ERRORS`). Before the pivot (DeleteVectors) a failure is compensated; after it
the steps are retried generously and a failure leaves the document `deleting` for a new DELETE.
"""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from infra.cdk.config import DeployConfig
from infra.cdk.constructs.tags import tag_state_machine
from infra.cdk.naming import state_machine_name
from infra.cdk.stacks.index import IndexStack
from infra.cdk.stacks.ingest import IngestStack
from ragline.saga import (
    ACTIVATE,
    CHECK_SWITCHED,
    COMPLETE,
    DELETE_OBJECTS,
    DELETE_OLD_VECTORS,
    DELETE_RECORD,
    DELETE_VECTORS,
    FAIL_OPERATION,
    INDEX_VERSION,
    INVALIDATE_CACHE,
    MARK_DELETING,
    PARSE_AND_CHUNK,
    PUBLISH_DELETED,
    REINDEX,
    RELEASE_VERSION,
    REMOVE_NEW_VERSION,
    RESERVE_VERSION,
    SWITCH_VERSION,
    TRANSIENT_ERRORS,
    UNMARK_DELETING,
)
from ragline.topology import DELETE_STATE_MACHINE, UPDATE_STATE_MACHINE

# Transient errors: 2 s, 4 s, ... capped at 60 s, 6 retries (about 3 minutes).
TRANSIENT_RETRY = {"interval": Duration.seconds(2), "max_attempts": 6, "backoff_rate": 2.0}
# MarkDeleting waits while another operation holds the document or it is still being ingested.
BUSY_RETRY = {"interval": Duration.seconds(2), "max_attempts": 10, "backoff_rate": 2.0}
# After the pivot nothing can be undone honestly: any other error is retried too before giving up.
AFTER_PIVOT_RETRY = {"interval": Duration.seconds(1), "max_attempts": 2, "backoff_rate": 2.0}
MAX_DELAY = Duration.seconds(60)
BUSY = "DocumentBusy"


def saga_logs(destination: logs.ILogGroup) -> sfn.LogOptions:
    """Every state transition (cdk-nag SF1: an incident needs the path an execution took), without
    execution data: inputs and outputs carry document ids and tenants, not for the logs."""
    return sfn.LogOptions(destination=destination, level=sfn.LogLevel.ALL, include_execution_data=False)


class SagaStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeployConfig,
        ingest: IngestStack,
        index: IndexStack,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        ingest_saga = ingest.functions["ingest-saga"].function
        index_saga = index.functions["index-saga"].function
        self.state_machines: dict[str, sfn.StateMachine] = {
            DELETE_STATE_MACHINE: self._document_delete(config, ingest_saga, index_saga),
            UPDATE_STATE_MACHINE: self._document_update(config, ingest_saga, index_saga),
        }

    def _task(
        self,
        step: str,
        function: lambda_.IFunction,
        *,
        result_path: str | None = sfn.JsonPath.DISCARD,
        scope: Construct | None = None,
    ) -> tasks.LambdaInvoke:
        task = tasks.LambdaInvoke(
            scope or self,
            step,
            lambda_function=function,
            payload=sfn.TaskInput.from_object({"step": step, "saga": sfn.JsonPath.entire_payload}),
            payload_response_only=True,
            retry_on_service_exceptions=False,  # TRANSIENT_ERRORS has them, with our backoff
            result_path=result_path,
        )
        task.add_retry(errors=list(TRANSIENT_ERRORS), max_delay=MAX_DELAY, **TRANSIENT_RETRY)
        return task

    @staticmethod
    def _after_pivot(steps: list[tasks.LambdaInvoke], fail: sfn.IChainable) -> list[tasks.LambdaInvoke]:
        """The steps after the pivot: nothing can be undone, so any error is retried before `fail`."""
        for step in steps:
            step.add_retry(errors=[sfn.Errors.ALL], max_delay=MAX_DELAY, **AFTER_PIVOT_RETRY)
            step.add_catch(fail, errors=[sfn.Errors.ALL], result_path="$.error")
        return steps

    def _state_machine(
        self,
        config: DeployConfig,
        construct_id: str,
        name: str,
        head: sfn.Chain,
        after_pivot: list[tasks.LambdaInvoke],
        done: sfn.Succeed,
        *,
        comment: str,
    ) -> sfn.StateMachine:
        """`head`, then the after-pivot steps in order, then `done`: a state machine under its
        explicit name (the ingest API starts it by name), traced, logged to its own log group."""
        chain = head
        for step in after_pivot:
            chain = chain.next(step)
        chain = chain.next(done)
        log_group = logs.LogGroup(
            self,
            f"{construct_id}Logs",
            retention=config.log_retention,
            removal_policy=config.cdk_removal_policy,
        )
        machine = sfn.StateMachine(
            self,
            construct_id,
            state_machine_name=state_machine_name(config.stage, name),
            definition_body=sfn.DefinitionBody.from_chainable(chain),
            tracing_enabled=True,
            logs=saga_logs(log_group),
            timeout=Duration.hours(2),
            comment=comment,
        )
        tag_state_machine(machine, name)
        return machine

    def _document_delete(
        self, config: DeployConfig, ingest: lambda_.IFunction, index: lambda_.IFunction
    ) -> sfn.StateMachine:
        everything = [sfn.Errors.ALL]
        fail = self._task(FAIL_OPERATION, ingest).next(
            sfn.Fail(self, "Failed", error="DeleteFailed", cause="the operation records why")
        )

        # Compensation: the active version back in the index (after DeleteVectors), then the status
        # back (after either step: MarkDeleting may have marked the document before it failed).
        reindex = self._task(REINDEX, index, result_path="$.reindexed")
        unmark = self._task(UNMARK_DELETING, ingest, result_path="$.compensated")
        for step in (reindex, unmark):
            step.add_catch(fail, errors=everything, result_path="$.compensation_error")
        reindex.next(unmark).next(fail)

        mark = self._task(MARK_DELETING, ingest, result_path="$.document")
        mark.add_retry(errors=[BUSY], max_delay=MAX_DELAY, **BUSY_RETRY)
        mark.add_catch(unmark, errors=everything, result_path="$.error")

        vectors = self._task(DELETE_VECTORS, index, result_path="$.vectors")
        vectors.add_catch(reindex, errors=everything, result_path="$.error")

        after_pivot = self._after_pivot(
            [self._task(step, ingest) for step in (DELETE_OBJECTS, DELETE_RECORD, PUBLISH_DELETED, COMPLETE)],
            fail,
        )
        return self._state_machine(
            config,
            "DocumentDelete",
            DELETE_STATE_MACHINE,
            sfn.Chain.start(mark).next(vectors),
            after_pivot,
            sfn.Succeed(self, "Deleted"),
            comment="Delete a document: mark, delete vectors (pivot), objects, record, announce (docs/saga.md)",
        )

    def _document_update(
        self, config: DeployConfig, ingest: lambda_.IFunction, index: lambda_.IFunction
    ) -> sfn.StateMachine:
        """Reserve → parse and chunk → index (inactive) → activate → switch (the pivot) → delete the
        old vectors → invalidate the answer cache (DocumentUpdated) → complete. Its states are named
        as the delete's where they mean the same (Complete, FailOperation: ingest-saga tells them
        apart by the execution's `kind`), so they live in their own scope."""
        scope = Construct(self, "Update")
        everything = [sfn.Errors.ALL]
        fail = self._task(FAIL_OPERATION, ingest, scope=scope).next(
            sfn.Fail(scope, "Failed", error="UpdateFailed", cause="the operation records why")
        )

        # Compensation, in reverse: the new version's vectors (after IndexVersion), then the
        # reservation and the new version's objects (the document stays at its version).
        remove = self._task(REMOVE_NEW_VERSION, index, result_path="$.removed", scope=scope)
        release = self._task(RELEASE_VERSION, ingest, result_path="$.compensated", scope=scope)
        for step in (remove, release):
            step.add_catch(fail, errors=everything, result_path="$.compensation_error")
        remove.next(release).next(fail)

        reserve = self._task(RESERVE_VERSION, ingest, result_path="$.update", scope=scope)
        parse = self._task(PARSE_AND_CHUNK, ingest, result_path="$.chunks", scope=scope)
        for step in (reserve, parse):
            step.add_catch(release, errors=everything, result_path="$.error")
        index_version = self._task(INDEX_VERSION, index, result_path="$.indexed", scope=scope)
        activate = self._task(ACTIVATE, index, result_path="$.activated", scope=scope)
        for step in (index_version, activate):
            step.add_catch(remove, errors=everything, result_path="$.error")

        # The pivot. Its write is conditional and idempotent; when it fails, CheckSwitched reads
        # whether the write happened (a lost answer): then the update goes on, else it is undone.
        switch = self._task(SWITCH_VERSION, ingest, scope=scope)
        check = self._task(CHECK_SWITCHED, ingest, result_path="$.switch", scope=scope)
        switch.add_catch(check, errors=everything, result_path="$.error")
        check.add_catch(fail, errors=everything, result_path="$.compensation_error")

        after_pivot = self._after_pivot(
            [
                self._task(DELETE_OLD_VECTORS, index, result_path="$.old_vectors", scope=scope),
                self._task(INVALIDATE_CACHE, ingest, scope=scope),
                self._task(COMPLETE, ingest, scope=scope),
            ],
            fail,
        )
        check.next(
            sfn.Choice(scope, "WasSwitched")
            .when(sfn.Condition.boolean_equals("$.switch.switched", True), after_pivot[0])
            .otherwise(remove)
        )

        return self._state_machine(
            config,
            "DocumentUpdate",
            UPDATE_STATE_MACHINE,
            sfn.Chain.start(reserve).next(parse).next(index_version).next(activate).next(switch),
            after_pivot,
            sfn.Succeed(scope, "Updated"),
            comment="Update a document: reserve, chunk, index inactive, activate, switch (pivot), "
            "delete the old vectors, invalidate the answer cache (docs/saga.md)",
        )
