"""The local AWS: moto's server, with three of its costs taken out.

Profiling `python -m bench.ingest` (py-spy on the moto process) showed moto spending its CPU on
emulation overheads that grow with the data it holds, not on our calls:

- `TransactWriteItems` deep-copies every table it touches, all items, before each transaction so
  it can roll back (30% of moto's CPU at 600 documents, quadratic over a bulk ingest). Here a
  transaction instead snapshots only the items it writes and restores those on cancellation, which
  is what the rollback needs.
- Every request lists moto's package folder on disk to route by host name (9%); the list is fixed.
- Every received SQS message recomputes all of its queue's attributes, each a scan of the queue's
  messages, just to read the retention period.

The werkzeug request log line per call is also dropped (5%): the platform's own logs say what
happened.

Step Functions: moto executes the definitions of started executions (`execute_state_machine`, off
in moto by default), and the Lambda tasks of those executions go to the platform's Lambda Invoke
emulator at RAGLINE_LAMBDA_ENDPOINT_URL, which runs the real handlers, instead of moto's own Lambda
(which would need docker). `ragline.local.stepfunctions` says how moto invokes them. `tests/integration/test_aws_emulator.py` runs the same transaction cases against moto's
code and this one, so a moto upgrade that changes the semantics fails there, not in a demo.
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from unittest import mock


def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
    """moto's DynamoDBBackend.transact_write_items (5.2.5), with per-item snapshots for rollback."""
    from moto.dynamodb.exceptions import (
        ConditionalCheckFailed,
        MockValidationException,
        MultipleTransactionsException,
        TooManyTransactionsException,
        TransactionCanceledException,
        TransactWriteSingleOpException,
    )
    from moto.dynamodb.models import get_filter_expression

    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    written: list[tuple[str, dict[str, Any], Any]] = []  # (table, key, item before), in order
    target_items: set[tuple[str, str]] = set()

    def rollback() -> None:
        for table_name, key, before in reversed(written):
            if before is None:
                self.delete_item(table_name, key)
            else:
                self.put_item(table_name, before.to_json()["Attributes"])

    errors: list[tuple[str | None, str | None, dict[str, Any] | None]] = []
    for item in transact_items:
        original_item: dict[str, Any] | None = None
        if len(item) > 1:
            raise TransactWriteSingleOpException
        try:
            op_type, op = next(iter(item.items()))
            if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
                raise ValueError("Unsupported transaction operation")
            table_name = op["TableName"]
            condition_expression = op.get("ConditionExpression")
            names = op.get("ExpressionAttributeNames")
            values = op.get("ExpressionAttributeValues")
            if op_type == "Put":
                table = self.get_table(table_name)
                key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = op["Item"][table.range_key_attr]
            else:
                key = op["Key"]
            unique = (str(table_name), str(dict(sorted(key.items()))))
            if unique in target_items:
                raise MultipleTransactionsException()
            target_items.add(unique)

            current = self.get_item(table_name, key)
            if condition_expression is not None:
                condition = get_filter_expression(condition_expression, names, values)
                if not condition.expr(current):
                    if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                        original_item = current.to_json()["Attributes"]
                    raise ConditionalCheckFailed(item=original_item)
            if op_type != "ConditionCheck":
                written.append((table_name, key, copy.deepcopy(current)))
            if op_type == "Put":
                self.put_item(
                    table_name,
                    op["Item"],
                    condition_expression=condition_expression,
                    expression_attribute_names=names,
                    expression_attribute_values=values,
                )
            elif op_type == "Delete":
                self.delete_item(
                    table_name,
                    key,
                    condition_expression=condition_expression,
                    expression_attribute_names=names,
                    expression_attribute_values=values,
                )
            elif op_type == "Update":
                self.update_item(
                    table_name,
                    key,
                    update_expression=op["UpdateExpression"],
                    condition_expression=condition_expression,
                    expression_attribute_names=names,
                    expression_attribute_values=values,
                )
            errors.append((None, None, None))
        except (MultipleTransactionsException, MockValidationException):
            rollback()
            raise
        except ConditionalCheckFailed as e:
            errors.append(("ConditionalCheckFailed", str(e.message), original_item))
        except Exception as e:  # noqa: BLE001 - moto reports any other failure as a cancellation reason
            errors.append((type(e).__name__, str(e), original_item))

    if any(code is not None for code, _, _ in errors):
        rollback()
        raise TransactionCanceledException(errors)


def is_message_valid_based_on_retention_period(self: Any, queue_name: str, message: Any) -> bool:
    """The retention period straight from the queue, not from a recomputation of all its attributes."""
    from moto.core.utils import unix_time

    period = float(self.get_queue(queue_name).message_retention_period)
    return period + message.sent_timestamp / 1000 > unix_time()


def _no_request_log(self: Any, code: Any = "-", size: Any = "-") -> None:
    return None


def patches() -> list[tuple[Any, str, Any]]:
    """(owner, attribute, replacement) for each fix, for `applied()` and for tests."""
    import moto.backends
    from moto.dynamodb.models import DynamoDBBackend
    from moto.sqs.models import SQSBackend

    # The folder listing, once: it only changes when moto is reinstalled.
    modules = tuple(moto.backends.list_of_moto_modules())
    return [
        (DynamoDBBackend, "transact_write_items", transact_write_items),
        (
            SQSBackend,
            "is_message_valid_based_on_retention_period",
            is_message_valid_based_on_retention_period,
        ),
        (moto.backends, "list_of_moto_modules", lambda: iter(modules)),
    ]


@contextmanager
def applied() -> Iterator[None]:
    with ExitStack() as stack:
        for owner, attribute, replacement in patches():
            stack.enter_context(mock.patch.object(owner, attribute, replacement))
        yield


@contextmanager
def step_functions(lambda_endpoint_url: str | None) -> Iterator[None]:
    """Executions run their definitions; Lambda tasks go to `lambda_endpoint_url` when given."""
    from ragline.local.stepfunctions import EndpointInvoker, executing_state_machines, lambda_tasks_routed

    with ExitStack() as stack:
        stack.enter_context(executing_state_machines())
        if lambda_endpoint_url:
            stack.enter_context(lambda_tasks_routed(EndpointInvoker(lambda_endpoint_url)))
        yield


def main(argv: list[str] | None = None) -> None:
    """`python -m ragline.local.aws_emulator -H HOST -p PORT`: moto.server's own options."""
    from moto.server import main as moto_main
    from werkzeug.serving import WSGIRequestHandler

    with (
        applied(),
        step_functions(os.environ.get("RAGLINE_LAMBDA_ENDPOINT_URL")),
        mock.patch.object(WSGIRequestHandler, "log_request", _no_request_log),
    ):
        moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
