"""docs/ is generated from the contracts and the routers; these fail when the committed files drift."""

import json
from pathlib import Path

from ragline.apidocs import event_schemas, write_docs
from ragline.contracts import EVENT_TYPES

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_committed_docs_match_the_models():
    assert write_docs(DOCS, check=True) == [], "run `ragline schemas` and commit docs/"


def test_the_check_notices_a_changed_file(tmp_path):
    write_docs(tmp_path)
    assert write_docs(tmp_path, check=True) == []
    schema = tmp_path / "events" / "DocumentUploaded.json"
    data = json.loads(schema.read_text())
    data["properties"]["detail"] = {"type": "string"}
    schema.write_text(json.dumps(data))
    assert write_docs(tmp_path, check=True) == [schema]


def test_every_event_schema_is_an_eventbridge_envelope_with_versioned_metadata():
    for detail in EVENT_TYPES:
        schema = event_schemas()[f"events/{detail.DETAIL_TYPE}.json"]
        assert {"detail-type", "source", "detail"} <= set(schema["properties"])
        metadata = schema["$defs"]["EventMetadata"]["properties"]
        assert {"schema_version", "correlation_id", "idempotency_key"} <= set(metadata)


def test_every_operation_names_the_scope_its_route_needs_and_the_api_key():
    from ragline.apidocs import openapi
    from ragline.topology import TOPOLOGY, oauth_scope

    document = openapi()
    routes = {(r.method.lower(), r.path): r.scope for f in TOPOLOGY.functions for r in f.routes}
    operations = {(m, p): op for p, item in document["paths"].items() for m, op in item.items()}
    assert operations.keys() == routes.keys()
    for key, operation in operations.items():
        scope = oauth_scope(routes[key])
        assert operation["security"] == [
            {"bearer": [scope], "apiKey": []},
            {"clientCredentials": [scope], "apiKey": []},
        ], key
    granted = document["components"]["securitySchemes"]["clientCredentials"]["flows"]["clientCredentials"]
    assert set(granted["scopes"]) == {oauth_scope(r) for r in routes.values()}
