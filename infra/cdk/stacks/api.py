"""The public HTTPS API: a REST API whose resources and methods come from the topology's routes.

Every method is behind the Cognito user pool authorizer and names the OAuth scope its route needs
(topology `RouteSpec.scope`), so callers present an *access* token: people get the scopes and their
`custom:tenant` claim from the pre-token-generation trigger (infra/cdk/triggers/pre_token.py), machine
clients (`api.machineClients`) their client's scopes from the client-credentials flow and their groups
(`ragline:groups`) and tenant from the same trigger; groups and tenant decide what a caller may see
(ragline.identity). Every method also requires an API key, bound to the usage plan of its
tier (cdk.json `apiTiers`); a WAF web ACL and request-body validation against the API's models
(infra/cdk/apimodels.py) stand in front of the functions. Every route of an ASGI
function uses API Gateway response streaming into Lambda's InvokeWithResponseStream: the Lambda Web
Adapter runs in response_stream mode, which a buffered integration cannot read, so streaming follows
from `FunctionSpec.asgi` rather than from each route.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from aws_cdk import Aws, CfnOutput, Duration, Stack
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_ssm as ssm
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from infra.cdk import apimodels
from infra.cdk.config import DeployConfig
from infra.cdk.constructs.function import RaglineFunction, asset_function
from infra.cdk.naming import pascal, resource_name
from ragline.identity import TENANT_CLAIM
from ragline.topology import RESOURCE_SERVER, SCOPES, TOPOLOGY, RouteSpec, oauth_scope

TRIGGERS_DIR = Path(__file__).resolve().parents[1] / "triggers"
# Bodies outside the document routes are small JSON; document routes carry inline content (up to
# Settings.max_inline_bytes) and are bounded by API Gateway's 10 MB payload limit and the function.
DOCUMENT_PATHS = "/v1/documents"

# (response type, status, error code): what the local gateway answers for the same cases.
GATEWAY_ERRORS = (
    (apigateway.ResponseType.UNAUTHORIZED, "401", "unauthorized"),
    (apigateway.ResponseType.ACCESS_DENIED, "403", "forbidden"),
    (apigateway.ResponseType.THROTTLED, "429", "throttled"),
    (apigateway.ResponseType.QUOTA_EXCEEDED, "429", "quota_exceeded"),
    (apigateway.ResponseType.REQUEST_TOO_LARGE, "413", "payload_too_large"),
    (apigateway.ResponseType.MISSING_AUTHENTICATION_TOKEN, "404", "not_found"),
    (apigateway.ResponseType.DEFAULT_5_XX, "502", "gateway_error"),
    # A body that does not match the route's model (BodyValidator): what the functions answer too
    # (ragline.http: 422 validation_error), so a client sees one contract whoever refuses it.
    (apigateway.ResponseType.BAD_REQUEST_BODY, "422", "validation_error"),
)
# API Gateway's headers are static: a throttled caller may retry in a second; a caller over its daily
# quota is told to come back in an hour (the quota resets at 00:00 UTC; the local gateway, which
# knows the time, says exactly when).
RETRY_AFTER = {"throttled": "1", "quota_exceeded": "3600"}


class Identity(Construct):
    """Who may call the API: a user pool (created, or `api.userPoolId`), its resource server with the
    platform's scopes, an app client for people (SRP, no secret), one client-credentials client (with
    a secret) per `api.machineClients` entry, the token endpoint's domain, and the pre-token trigger
    that puts scopes, groups and tenant into access tokens (triggers/pre_token.py)."""

    def __init__(self, scope: Construct, construct_id: str, *, config: DeployConfig) -> None:
        super().__init__(scope, construct_id)
        # Named, not referenced: the trigger reads it, and a reference would close the cycle
        # pool → trigger → parameter → clients → pool.
        self.machine_clients_parameter_name = f"/ragline/{config.stage}/machine-clients"
        self.pre_token_trigger = self._pre_token_trigger(config)
        self.user_pool: cognito.IUserPool
        if config.api.user_pool_id:
            # An organisation's existing pool: its owner attaches the trigger (README, "Auth"); Cognito
            # may invoke it already.
            self.user_pool = cognito.UserPool.from_user_pool_id(self, "Users", config.api.user_pool_id)
            self.pre_token_trigger.add_permission(
                "CognitoInvoke",
                principal=iam.ServicePrincipal("cognito-idp.amazonaws.com"),
                source_arn=self.user_pool.user_pool_arn,
            )
        else:
            pool = cognito.UserPool(
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
                custom_attributes={
                    TENANT_CLAIM.removeprefix("custom:"): cognito.StringAttribute(mutable=False)
                },
                # Essentials: access-token customization (V2_0/V3_0 triggers) needs it, Lite has none.
                feature_plan=cognito.FeaturePlan.ESSENTIALS,
                removal_policy=config.cdk_removal_policy,
            )
            # V3_0, not V2_0: only V3_0 also runs for client-credentials grants.
            pool.add_trigger(
                cognito.UserPoolOperation.PRE_TOKEN_GENERATION_CONFIG,
                self.pre_token_trigger,
                cognito.LambdaVersion.V3_0,
            )
            self.user_pool = pool
        scopes = {
            s: cognito.ResourceServerScope(scope_name=s, scope_description=f"ragline {s}") for s in SCOPES
        }
        self.resource_server = self.user_pool.add_resource_server(
            "Scopes", identifier=RESOURCE_SERVER, scopes=list(scopes.values())
        )
        self.oauth_scopes = {
            name: cognito.OAuthScope.resource_server(self.resource_server, scope)
            for name, scope in scopes.items()
        }
        self.client = self.user_pool.add_client(
            "ApiClient",
            generate_secret=False,
            auth_flows=cognito.AuthFlow(user_srp=True, admin_user_password=True),
            # No hosted-UI flows: CDK's default would allow the implicit grant to https://example.com,
            # live now that the pool has a domain (for the machines' token endpoint).
            disable_o_auth=True,
            prevent_user_existence_errors=True,
        )
        self.machine_clients = {
            name: self.user_pool.add_client(
                f"{pascal(name)}MachineClient",
                user_pool_client_name=resource_name(config.stage, name),
                generate_secret=True,
                o_auth=cognito.OAuthSettings(
                    flows=cognito.OAuthFlows(client_credentials=True),
                    scopes=[self.oauth_scopes[s] for s in machine.scopes],
                ),
                prevent_user_existence_errors=True,
            )
            for name, machine in config.api.machine_clients.items()
        }
        self.machine_clients_parameter = ssm.StringParameter(
            self,
            "MachineClientsParameter",
            parameter_name=self.machine_clients_parameter_name,
            description="ragline: each machine client's groups and tenant (read by the pre-token trigger)",
            string_value=Stack.of(self).to_json_string(
                {
                    self.machine_clients[name].user_pool_client_id: {
                        "name": name,
                        "groups": list(machine.groups),
                        "tenant": machine.tenant,
                    }
                    for name, machine in config.api.machine_clients.items()
                }
            ),
        )
        self.domain = self.user_pool.add_domain(
            "Domain",
            cognito_domain=cognito.CognitoDomainOptions(
                domain_prefix=config.api.auth_domain_prefix or resource_name(config.stage, Aws.ACCOUNT_ID)
            ),
        )
        # Seam: groups (the visibility model) are managed by admins: `aws cognito-idp create-group`.

    def _pre_token_trigger(self, config: DeployConfig) -> lambda_.Function:
        """Scopes, groups and the tenant claim into access tokens (triggers/pre_token.py)."""
        role = iam.Role(
            self,
            "PreTokenRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="ragline Cognito pre token generation trigger",
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["ssm:GetParameter"],
                resources=[
                    Stack.of(self).format_arn(
                        service="ssm",
                        resource="parameter",
                        resource_name=self.machine_clients_parameter_name.removeprefix("/"),
                    )
                ],
            )
        )
        return asset_function(
            self,
            "PreToken",
            config=config,
            directory=TRIGGERS_DIR,
            handler="pre_token.handler",
            memory_size=128,
            timeout=Duration.seconds(5),
            role=role,
            environment={
                "RAGLINE_PEOPLE_SCOPES": json.dumps(config.api.people_scopes.oauth()),
                "RAGLINE_MACHINE_CLIENTS_PARAMETER": self.machine_clients_parameter_name,
            },
            description="ragline: scopes, groups and tenant claims into access tokens",
        )


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
            api_key_source_type=apigateway.ApiKeySourceType.HEADER,
        )
        self.authorizer = apigateway.CognitoUserPoolsAuthorizer(
            self, "Authorizer", cognito_user_pools=[self.identity.user_pool]
        )
        self.body_validator = self.api.add_request_validator(
            "BodyValidator", validate_request_body=True, validate_request_parameters=True
        )
        self.models: dict[str, apigateway.CfnModel] = {}
        for spec in TOPOLOGY.functions:
            for route in spec.routes:
                self._route(route, functions[spec.name])
        self._error_responses()
        self.usage_plans = self._usage_plans(config)
        self.web_acl = self._web_acl(config)

        CfnOutput(self, "ApiUrl", value=self.api.url)
        CfnOutput(self, "UserPoolId", value=self.identity.user_pool.user_pool_id)
        CfnOutput(self, "UserPoolClientId", value=self.identity.client.user_pool_client_id)
        for name, client in self.identity.machine_clients.items():
            CfnOutput(self, f"{pascal(name)}MachineClientId", value=client.user_pool_client_id)
        CfnOutput(self, "PreTokenTriggerArn", value=self.identity.pre_token_trigger.function_arn)
        CfnOutput(self, "TokenEndpoint", value=f"{self.identity.domain.base_url()}/oauth2/token")
        for name, plan in self.usage_plans.items():
            CfnOutput(self, f"{pascal(name)}UsagePlanId", value=plan.usage_plan_id)

    def _usage_plans(self, config: DeployConfig) -> dict[str, apigateway.UsagePlan]:
        """One usage plan per tier (cdk.json `apiTiers`). Keys are made per customer, not here:
        `aws apigateway create-api-key` and `create-usage-plan-key` (docs/runbook.md)."""
        return {
            tier.name: self.api.add_usage_plan(
                f"{pascal(tier.name)}Plan",
                name=resource_name(config.stage, tier.name),
                description=f"ragline {tier.name} tier",
                throttle=apigateway.ThrottleSettings(rate_limit=tier.rate_per_second, burst_limit=tier.burst),
                quota=apigateway.QuotaSettings(limit=tier.daily_quota, period=apigateway.Period.DAY),
                api_stages=[apigateway.UsagePlanPerApiStage(api=self.api, stage=self.api.deployment_stage)],
            )
            for tier in config.api_tiers.values()
        }

    def _web_acl(self, config: DeployConfig) -> wafv2.CfnWebACL:
        """AWS managed rules (IP reputation, common, known bad inputs), a per-IP rate limit and a body
        size limit outside the document routes, associated with the stage."""

        def visibility(name: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
            return wafv2.CfnWebACL.VisibilityConfigProperty(
                cloud_watch_metrics_enabled=True, metric_name=f"ragline-{name}", sampled_requests_enabled=True
            )

        def managed(
            priority: int, name: str, overrides: tuple[str, ...] = ()
        ) -> wafv2.CfnWebACL.RuleProperty:
            return wafv2.CfnWebACL.RuleProperty(
                name=name,
                priority=priority,
                override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),
                statement=wafv2.CfnWebACL.StatementProperty(
                    managed_rule_group_statement=wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
                        vendor_name="AWS",
                        name=name,
                        rule_action_overrides=[
                            wafv2.CfnWebACL.RuleActionOverrideProperty(
                                name=rule, action_to_use=wafv2.CfnWebACL.RuleActionProperty(count={})
                            )
                            for rule in overrides
                        ]
                        or None,
                    )
                ),
                visibility_config=visibility(name),
            )

        body_limit = wafv2.CfnWebACL.RuleProperty(
            name="BodySizeLimit",
            priority=2,
            action=wafv2.CfnWebACL.RuleActionProperty(block={}),
            statement=wafv2.CfnWebACL.StatementProperty(
                and_statement=wafv2.CfnWebACL.AndStatementProperty(
                    statements=[
                        wafv2.CfnWebACL.StatementProperty(
                            size_constraint_statement=wafv2.CfnWebACL.SizeConstraintStatementProperty(
                                field_to_match=wafv2.CfnWebACL.FieldToMatchProperty(
                                    # Larger than WAF inspects is larger than the limit.
                                    body=wafv2.CfnWebACL.BodyProperty(oversize_handling="MATCH")
                                ),
                                comparison_operator="GT",
                                size=config.api.waf_body_limit_kib * 1024,
                                text_transformations=[
                                    wafv2.CfnWebACL.TextTransformationProperty(priority=0, type="NONE")
                                ],
                            )
                        ),
                        wafv2.CfnWebACL.StatementProperty(
                            not_statement=wafv2.CfnWebACL.NotStatementProperty(
                                statement=wafv2.CfnWebACL.StatementProperty(
                                    byte_match_statement=wafv2.CfnWebACL.ByteMatchStatementProperty(
                                        field_to_match=wafv2.CfnWebACL.FieldToMatchProperty(uri_path={}),
                                        positional_constraint="CONTAINS",
                                        search_string=DOCUMENT_PATHS,
                                        text_transformations=[
                                            wafv2.CfnWebACL.TextTransformationProperty(
                                                priority=0, type="NONE"
                                            )
                                        ],
                                    )
                                )
                            )
                        ),
                    ]
                )
            ),
            visibility_config=visibility("BodySizeLimit"),
        )
        rate_limit = wafv2.CfnWebACL.RuleProperty(
            name="RateLimitPerIp",
            priority=1,
            action=wafv2.CfnWebACL.RuleActionProperty(block={}),
            statement=wafv2.CfnWebACL.StatementProperty(
                rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                    limit=config.api.waf_rate_limit, aggregate_key_type="IP", evaluation_window_sec=300
                )
            ),
            visibility_config=visibility("RateLimitPerIp"),
        )
        acl = wafv2.CfnWebACL(
            self,
            "WebAcl",
            scope="REGIONAL",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            description=f"ragline-{config.stage} API",
            visibility_config=visibility("api"),
            association_config=wafv2.CfnWebACL.AssociationConfigProperty(
                request_body={
                    "API_GATEWAY": wafv2.CfnWebACL.RequestBodyAssociatedResourceTypeConfigProperty(
                        default_size_inspection_limit=f"KB_{config.api.waf_body_limit_kib}"
                    )
                }
            ),
            rules=[
                managed(0, "AWSManagedRulesAmazonIpReputationList"),
                rate_limit,
                body_limit,
                # SizeRestrictions_BODY (8 KB) would refuse inline documents: BodySizeLimit replaces it.
                managed(3, "AWSManagedRulesCommonRuleSet", overrides=("SizeRestrictions_BODY",)),
                managed(4, "AWSManagedRulesKnownBadInputsRuleSet"),
            ],
        )
        wafv2.CfnWebACLAssociation(
            self,
            "WebAclAssociation",
            resource_arn=self.api.deployment_stage.stage_arn,
            web_acl_arn=acl.attr_arn,
        )
        return acl

    def _error_responses(self) -> None:
        """Errors API Gateway answers itself (authorizer, throttling, unknown routes) in the same
        `{"error": {"code", "message", "details"}}` shape the functions use."""
        for response_type, status, code in GATEWAY_ERRORS:
            self.api.add_gateway_response(
                f"{code.title().replace('_', '')}Response",
                type=response_type,
                status_code=status,
                response_headers={"Retry-After": f"'{RETRY_AFTER[code]}'"} if code in RETRY_AFTER else None,
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
        if route.scope is None:
            raise ValueError(f"{route.method} {route.path}: every route needs a scope (ragline.topology)")
        schema = apimodels.request_schema(route.method, route.path)
        model = None
        if schema is not None:
            name = apimodels.model_name(route.method, route.path)
            self.models[name] = apigateway.CfnModel(
                self,
                f"{name}Model",
                rest_api_id=self.api.rest_api_id,
                name=name,
                content_type="application/json",
                schema=schema,
            )
            model = apigateway.Model.from_model_name(self, f"{name}ModelRef", name)
        method = resource.add_method(
            route.method,
            integration,
            authorizer=self.authorizer,
            authorization_type=apigateway.AuthorizationType.COGNITO,
            authorization_scopes=[oauth_scope(route.scope)],
            api_key_required=True,
            request_validator=self.body_validator if model else None,
            request_models={"application/json": model} if model else None,
        )
        if schema is not None:
            method.node.add_dependency(self.models[name])
        return method
