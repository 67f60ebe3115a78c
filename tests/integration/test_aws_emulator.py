"""The local AWS emulator's fixes keep moto's behaviour: every case runs against moto's own code and
against `ragline.local.aws_emulator`'s replacement, and both must answer alike."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from ragline.local import aws_emulator

TABLE = "emulator-test"


@pytest.fixture(params=["moto", "emulator"])
def dynamodb(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    patched = aws_emulator.applied() if request.param == "emulator" else nullcontext()
    with mock_aws(), patched:
        client = boto3.client(
            "dynamodb", region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
        )
        client.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield client


def put(id_: str, **attributes: dict[str, str]) -> dict[str, Any]:
    return {"Put": {"TableName": TABLE, "Item": {"id": {"S": id_}, **attributes}}}


def item(client: Any, id_: str) -> dict[str, Any] | None:
    return client.get_item(TableName=TABLE, Key={"id": {"S": id_}}).get("Item")


def cancellation(client: Any, items: list[dict[str, Any]]) -> list[str]:
    with pytest.raises(ClientError) as raised:
        client.transact_write_items(TransactItems=items)
    assert raised.value.response["Error"]["Code"] == "TransactionCanceledException"
    return [reason["Code"] for reason in raised.value.response["CancellationReasons"]]


def test_a_transaction_writes_all_its_items(dynamodb: Any) -> None:
    dynamodb.transact_write_items(TransactItems=[put("a", n={"N": "1"}), put("b", n={"N": "2"})])
    assert item(dynamodb, "a")["n"] == {"N": "1"}
    assert item(dynamodb, "b")["n"] == {"N": "2"}


def test_a_failed_condition_cancels_the_writes_before_it(dynamodb: Any) -> None:
    dynamodb.put_item(TableName=TABLE, Item={"id": {"S": "taken"}})
    claim = put("taken")
    claim["Put"]["ConditionExpression"] = "attribute_not_exists(id)"
    assert cancellation(dynamodb, [put("new"), claim]) == ["None", "ConditionalCheckFailed"]
    assert item(dynamodb, "new") is None


def test_updates_and_deletes_are_rolled_back_to_the_items_as_they_were(dynamodb: Any) -> None:
    dynamodb.put_item(TableName=TABLE, Item={"id": {"S": "counter"}, "n": {"N": "5"}, "tag": {"S": "x"}})
    dynamodb.put_item(TableName=TABLE, Item={"id": {"S": "doomed"}, "keep": {"S": "me"}})
    items = [
        {
            "Update": {
                "TableName": TABLE,
                "Key": {"id": {"S": "counter"}},
                "UpdateExpression": "SET n = n + :one REMOVE tag",
                "ExpressionAttributeValues": {":one": {"N": "1"}},
            }
        },
        {"Delete": {"TableName": TABLE, "Key": {"id": {"S": "doomed"}}}},
        {
            "ConditionCheck": {
                "TableName": TABLE,
                "Key": {"id": {"S": "missing"}},
                "ConditionExpression": "attribute_exists(id)",
            }
        },
    ]
    assert cancellation(dynamodb, items) == ["None", "None", "ConditionalCheckFailed"]
    assert item(dynamodb, "counter") == {"id": {"S": "counter"}, "n": {"N": "5"}, "tag": {"S": "x"}}
    assert item(dynamodb, "doomed") == {"id": {"S": "doomed"}, "keep": {"S": "me"}}


def test_the_old_item_comes_back_with_the_cancellation_when_asked(dynamodb: Any) -> None:
    dynamodb.put_item(TableName=TABLE, Item={"id": {"S": "held"}, "owner": {"S": "first"}})
    claim = put("held", owner={"S": "second"})
    claim["Put"] |= {
        "ConditionExpression": "attribute_not_exists(id)",
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }
    with pytest.raises(ClientError) as raised:
        dynamodb.transact_write_items(TransactItems=[claim])
    assert raised.value.response["CancellationReasons"][0]["Item"]["owner"] == {"S": "first"}
    assert item(dynamodb, "held")["owner"] == {"S": "first"}


def test_one_item_twice_is_a_validation_error_that_writes_nothing(dynamodb: Any) -> None:
    with pytest.raises(ClientError) as raised:
        dynamodb.transact_write_items(TransactItems=[put("first"), put("twice"), put("twice")])
    assert raised.value.response["Error"]["Code"] == "ValidationException"
    assert item(dynamodb, "first") is None


@pytest.mark.parametrize("variant", ["moto", "emulator"])
@pytest.mark.parametrize(("age_s", "delivered"), [(30, ["kept"]), (120, [])])
def test_sqs_retention_still_drops_expired_messages(
    variant: str, age_s: int, delivered: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.sqs.models import sqs_backends

    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    patched = aws_emulator.applied() if variant == "emulator" else nullcontext()
    with mock_aws(), patched:
        sqs = boto3.client("sqs", region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t")
        url = sqs.create_queue(QueueName="q", Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="kept")
        queue = sqs_backends["123456789012"]["us-east-1"].queues["q"]
        queue._messages[0].sent_timestamp -= age_s * 1000  # as if sent that long ago
        bodies = [
            m["Body"] for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        ]
    assert bodies == delivered
