"""CloudFormation custom resource: map the search roles into OpenSearch fine-grained access control.

With fine-grained access control an IAM role reaches data only through an OpenSearch role mapped to
it. This function runs as the domain's master user (its own role, nothing else is master) and adds:
the index context's roles to `all_access` (they create indices, aliases and mappings) and the
retrieve roles to `readall`. It adds to what a mapping already holds (read, merge, write), so the
master user's own mapping and anything an operator added stay. On Delete it does nothing: the
domain (retained) keeps its mappings.

Properties: `Endpoint` (the domain's host name), `Mappings` ({opensearch role: [IAM role ARNs]}).
Self-contained (botocore is in the Lambda runtime): it is deployed as its own small asset.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

PATH = "/_plugins/_security/api/rolesmapping/{role}"


def merged(current: Mapping[str, Any] | None, backend_roles: Sequence[str]) -> dict[str, Any]:
    """The mapping to write: the current one with `backend_roles` added (order kept, no duplicates)."""
    current = dict(current or {})
    roles = list(current.get("backend_roles", []))
    roles += [r for r in backend_roles if r not in roles]
    return {
        "backend_roles": roles,
        "users": list(current.get("users", [])),
        "hosts": list(current.get("hosts", [])),
    }


def _signed(method: str, url: str, body: bytes | None = None) -> urllib.request.Request:
    import botocore.session
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    credentials = botocore.session.get_session().get_credentials()
    request = AWSRequest(method=method, url=url, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(credentials, "es", os.environ["AWS_REGION"]).add_auth(request)
    return urllib.request.Request(url, data=body, headers=dict(request.headers), method=method)


def _call(method: str, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(_signed(method, url, data), timeout=20) as response:  # noqa: S310
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        if method == "GET" and error.code == 404:
            return {}
        raise RuntimeError(f"{method} {url}: {error.code} {error.read()[:500]!r}") from error


def apply(endpoint: str, mappings: Mapping[str, Sequence[str]]) -> None:
    for role, backend_roles in mappings.items():
        url = f"https://{endpoint}{PATH.format(role=role)}"
        current = _call("GET", url).get(role)
        _call("PUT", url, merged(current, backend_roles))


def _respond(event: Mapping[str, Any], status: str, reason: str = "") -> None:
    body = json.dumps(
        {
            "Status": status,
            "Reason": reason[:1000] or status,
            "PhysicalResourceId": event.get("PhysicalResourceId")
            or f"search-roles-{event['LogicalResourceId']}",
            "StackId": event["StackId"],
            "RequestId": event["RequestId"],
            "LogicalResourceId": event["LogicalResourceId"],
        }
    ).encode()
    request = urllib.request.Request(
        event["ResponseURL"], data=body, method="PUT", headers={"Content-Type": ""}
    )
    with urllib.request.urlopen(request, timeout=20):  # noqa: S310 (CloudFormation's presigned S3 URL)
        pass


def handler(event: dict[str, Any], _context: Any = None) -> None:
    try:
        if event["RequestType"] in ("Create", "Update"):
            props = event["ResourceProperties"]
            apply(props["Endpoint"], props["Mappings"])
        _respond(event, "SUCCESS")
    except Exception as error:  # CloudFormation must hear back, or the stack waits for an hour
        print(json.dumps({"level": "ERROR", "message": str(error)}))
        _respond(event, "FAILED", str(error))
