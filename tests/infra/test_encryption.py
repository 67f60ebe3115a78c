"""Everything at rest under the platform key (stacks/platform.py), TLS only in transit, and the key
usable by the functions only through the services that store their data."""

from __future__ import annotations

import json

from infra.cdk.stacks.platform import KEY_SERVICES, KEYLESS_CONTEXTS
from ragline.topology import BUCKETS, TOPOLOGY

DATA_PREFIXES = ("s3:", "dynamodb:", "sqs:SendMessage", "sqs:ReceiveMessage", "events:PutEvents")


def _key_id(synth) -> str:
    return synth.logical_id(synth.stacks["Platform"].key)


def test_the_platform_key_rotates_and_admits_eventbridge_only_from_this_account(synth):
    (key,) = synth.resources("AWS::KMS::Key", "Platform").values()
    assert key["Properties"]["EnableKeyRotation"] is True
    statements = key["Properties"]["KeyPolicy"]["Statement"]
    assert not [s for s in statements if s.get("Principal") == "*" or s.get("Principal") == {"AWS": "*"}]
    events = [s for s in statements if s.get("Principal") == {"Service": "events.amazonaws.com"}]
    assert events
    for statement in events:
        assert statement.get("Condition"), statement  # the account (delivery) or the bus (encryption)


def test_queues_buckets_tables_bus_and_index_are_encrypted_with_the_platform_key(synth):
    key = _key_id(synth)
    queues = synth.resources("AWS::SQS::Queue")
    assert len(queues) == 2 * len(TOPOLOGY.queues)
    assert all(key in json.dumps(q["Properties"]["KmsMasterKeyId"]) for q in queues.values())

    ingest = synth.stacks["Ingest"]
    for name in BUCKETS:
        props = synth.templates["Ingest"]["Resources"][synth.logical_id(ingest.buckets[name])]["Properties"]
        (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
        assert key in json.dumps(rule["ServerSideEncryptionByDefault"]["KMSMasterKeyID"])
        assert rule["BucketKeyEnabled"] is True
    # Server access logs can only be delivered to an SSE-S3 bucket.
    logs = synth.templates["Ingest"]["Resources"][synth.logical_id(ingest.access_logs)]["Properties"]
    (rule,) = logs["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"

    tables = synth.resources("AWS::DynamoDB::Table")
    assert len(tables) == len(TOPOLOGY.tables)
    for table in tables.values():
        sse = table["Properties"]["SSESpecification"]
        assert sse["SSEType"] == "KMS" and key in json.dumps(sse["KMSMasterKeyId"])

    (bus,) = synth.resources("AWS::Events::EventBus", "Platform").values()
    assert bus["Properties"]["KmsKeyIdentifier"] == {"Fn::GetAtt": [key, "Arn"]}

    (domain,) = synth.resources("AWS::OpenSearchService::Domain").values()
    props = domain["Properties"]
    assert props["EncryptionAtRestOptions"]["Enabled"] is True
    assert key in json.dumps(props["EncryptionAtRestOptions"]["KmsKeyId"])
    assert props["NodeToNodeEncryptionOptions"] == {"Enabled": True}
    assert props["DomainEndpointOptions"]["EnforceHTTPS"] is True
    assert props["DomainEndpointOptions"]["TLSSecurityPolicy"].startswith("Policy-Min-TLS-1-2")


def test_functions_use_the_key_only_through_their_data_services(synth):
    """Each function that stores or reads data may use the key, and only with kms:ViaService; retrieve
    (the search index only) may not use it at all."""
    from tests.infra.test_least_privilege import _roles

    key = _key_id(synth)
    services = {f"{s}." for s in KEY_SERVICES}
    checked = set()
    for role in _roles(synth).values():
        if role.function is None:
            continue
        kms = [s for s in role.statements if any(a.startswith("kms:") for a in _list(s["Action"]))]
        direct = [s for s in kms if "kms:ViaService" not in json.dumps(s.get("Condition", {}))]
        # CDK's own grants on a queue/bucket add key statements too; all of them name only the key.
        assert all(key in json.dumps(s["Resource"]) for s in kms), role.function
        if role.context in KEYLESS_CONTEXTS:
            assert kms == [], role.function
            continue
        data = [a for a, _, _ in role.allows() if a.startswith(DATA_PREFIXES)]
        if data:
            via = [s for s in kms if s not in direct]
            assert via, role.function
            named = json.dumps([s["Condition"] for s in via])
            assert all(s in named for s in services), role.function
            checked.add(role.context)
    assert checked >= {"ingest", "index", "context"}


def _list(value) -> list:
    return value if isinstance(value, list) else [value]
