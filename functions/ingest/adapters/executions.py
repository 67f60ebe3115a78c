"""Starting a saga: Step Functions StartExecution, the operation id as the execution name."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError


class StepFunctionsStarter:
    def __init__(self, stepfunctions_client: Any, state_machine_arn: str) -> None:
        self._client = stepfunctions_client
        self._arn = state_machine_arn

    def start(self, name: str, payload: dict[str, Any]) -> None:
        """An execution of this name that exists already (running with this input: Step Functions
        returns it; otherwise ExecutionAlreadyExists) means the operation was started before."""
        try:
            self._client.start_execution(stateMachineArn=self._arn, name=name, input=json.dumps(payload))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ExecutionAlreadyExists":
                raise
