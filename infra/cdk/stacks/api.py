"""The public HTTPS API: a REST API whose resources and methods come from the topology's routes.

Every method is behind the Cognito user pool authorizer (the ID token's `cognito:groups` and
`custom:tenant` claims decide what a caller may see; see ragline.identity). Every route of an ASGI
function uses API Gateway response streaming into Lambda's InvokeWithResponseStream: the Lambda Web
Adapter runs in response_stream mode, which a buffered integration cannot read, so streaming follows
from `FunctionSpec.asgi` rather than from each route.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import CfnOutput, Duration, Stack
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.cdk.config import DeployConfig
from infra.cdk.constructs.function import RaglineFunction
from ragline.identity import TENANT_CLAIM
from ragline.topology import TOPOLOGY, RouteSpec

# (response type, status, error code): what the local gateway answers for the same cases.
GATEWAY_ERRORS = (
    (apigateway.ResponseType.UNAUTHORIZED, "401", "unauthorized"),
    (apigateway.ResponseType.ACCESS_DENIED, "403", "forbidden"),
    (apigateway.ResponseType.THROTTLED, "429", "throttled"),
    (apigateway.ResponseType.QUOTA_EXCEEDED, "429", "quota_exceeded"),
    (apigateway.ResponseType.REQUEST_TOO_LARGE, "413", "payload_too_large"),
    (apigateway.ResponseType.MISSING_AUTHENTICATION_TOKEN, "404", "not_found"),
    (apigateway.ResponseType.DEFAULT_5_XX, "502", "gateway_error"),
)


class Identity(Construct):
    """Who may call the API: one user pool, one app client (no secret: CLIs and SPAs)."""

    def __init__(self, scope: Construct, construct_id: str, *, config: DeployConfig) -> None:
        super().__init__(scope, construct_id)
        self.user_pool = cognito.UserPool(
            self,
            "Users",
            self_sign_up_enabled=False,
            sign_in_aliases=cognito.SignInAliases(email=True, username=True),
            password_policy=cognito.PasswordPolicy(
                min_length=12,
                require_digits=True,
                require_lowercase=True,
                require_uppercase=True,
                require_symbols=True,
            ),
            mfa=cognito.Mfa.OPTIONAL,
            mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            custom_attributes={TENANT_CLAIM.removeprefix("custom:"): cognito.StringAttribute(mutable=False)},
            removal_policy=config.cdk_removal_policy,
        )
        self.client = self.user_pool.add_client(
            "ApiClient",
            generate_secret=False,
            auth_flows=cognito.AuthFlow(user_srp=True, admin_user_password=True),
            prevent_user_existence_errors=True,
        )
        # Seam: groups (the visibility model) are managed by admins: `aws cognito-idp create-group`.


class ApiStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeployConfig,
        functions: Mapping[str, RaglineFunction],
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.identity = Identity(self, "Identity", config=config)
        access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            retention=config.log_retention,
            removal_policy=config.cdk_removal_policy,
        )
        self.api = apigateway.RestApi(
            self,
            "Api",
            description="ragline",
            endpoint_types=[apigateway.EndpointType.REGIONAL],
            # Access and execution logging need the account-level CloudWatch role.
            cloud_watch_role=True,
            deploy_options=apigateway.StageOptions(
                stage_name=config.stage,
                throttling_rate_limit=config.api.throttle_rate_limit,
                throttling_burst_limit=config.api.throttle_burst_limit,
                access_log_destination=apigateway.LogGroupLogDestination(access_logs),
                access_log_format=apigateway.AccessLogFormat.json_with_standard_fields(
                    caller=False,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
                logging_level=apigateway.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,
                metrics_enabled=True,
                tracing_enabled=True,
            ),
            # Seams: usage plans and API keys per tier (api.add_usage_plan), WAF (a CfnWebACLAssociation
            # on api.deployment_stage.stage_arn), dashboards and alarms on the stage's metrics.
        )
        self.authorizer = apigateway.CognitoUserPoolsAuthorizer(
            self, "Authorizer", cognito_user_pools=[self.identity.user_pool]
        )
        for spec in TOPOLOGY.functions:
            for route in spec.routes:
                self._route(route, functions[spec.name])
        self._error_responses()

        CfnOutput(self, "ApiUrl", value=self.api.url)
        CfnOutput(self, "UserPoolId", value=self.identity.user_pool.user_pool_id)
        CfnOutput(self, "UserPoolClientId", value=self.identity.client.user_pool_client_id)

    def _error_responses(self) -> None:
        """Errors API Gateway answers itself (authorizer, throttling, unknown routes) in the same
        `{"error": {"code", "message", "details"}}` shape the functions use."""
        for response_type, status, code in GATEWAY_ERRORS:
            self.api.add_gateway_response(
                f"{code.title().replace('_', '')}Response",
                type=response_type,
                status_code=status,
                templates={
                    "application/json": (
                        f'{{"error": {{"code": "{code}", '
                        '"message": $context.error.messageString, "details": []}}'
                    )
                },
            )

    def _route(self, route: RouteSpec, fn: RaglineFunction) -> apigateway.Method:
        resource = self.api.root.resource_for_path(route.path.lstrip("/"))
        if fn.spec.asgi:
            # Streaming integrations may run up to the function's timeout (buffered ones stop at 29 s).
            integration = apigateway.LambdaIntegration(
                fn.function,
                response_transfer_mode=apigateway.ResponseTransferMode.STREAM,
                timeout=Duration.seconds(fn.spec.timeout_s),
            )
        else:
            integration = apigateway.LambdaIntegration(fn.function)
        return resource.add_method(
            route.method,
            integration,
            authorizer=self.authorizer,
            authorization_type=apigateway.AuthorizationType.COGNITO,
        )
