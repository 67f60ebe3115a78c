"""Index: the OpenSearch domain, the index worker, and the roles of every search client.

The domain's resource policy names the exact roles allowed to call it, so those roles must exist
before the domain and in its stack (CloudFormation validates the principals; a role defined in the
RetrieveStack would make IndexStack and RetrieveStack depend on each other). This stack therefore
creates the roles of the functions in SEARCH_ACCESS and hands the retrieve ones to RetrieveStack,
which attaches everything else they need. Writers get write actions; readers only GET/POST/HEAD.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import CfnCustomResource, Duration, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_opensearchservice as opensearch
from constructs import Construct

from infra.cdk.config import DeployConfig, SearchConfig
from infra.cdk.constructs.function import RaglineFunction, asset_function, context_functions, lambda_role
from infra.cdk.environment import env
from infra.cdk.naming import resource_name
from infra.cdk.stacks.ingest import IngestStack
from infra.cdk.stacks.models import ModelsStack
from infra.cdk.stacks.platform import PlatformStack
from ragline.topology import TOPOLOGY

CONTEXT = "index"
SEARCH_READ_ACTIONS = ("es:ESHttpGet", "es:ESHttpPost", "es:ESHttpHead")
SEARCH_WRITE_ACTIONS = (*SEARCH_READ_ACTIONS, "es:ESHttpPut", "es:ESHttpDelete", "es:ESHttpPatch")
# Which bounded contexts may call the domain, and how.
SEARCH_ACCESS = {"index": SEARCH_WRITE_ACTIONS, "retrieve": SEARCH_READ_ACTIONS}
# And on which paths (under domain/<name>/): readers only reach `<index or alias>/_search`, since
# POST is also how _bulk, _update_by_query and _delete_by_query write.
SEARCH_PATHS = {"index": ("*",), "retrieve": ("*/_search",)}
# Fine-grained access control: the OpenSearch role each context's IAM roles are mapped to.
SEARCH_ROLES = {"index": "all_access", "retrieve": "readall"}
CUSTOM_DIR = Path(__file__).resolve().parents[1] / "custom"
# Functions that publish nothing (index-saga: the saga reports its outcome through ingest;
# index-maintenance: the reconciler in ingest reports what it repaired).
QUIET = {"index-saga", "index-maintenance"}


def search_environment(
    domain: opensearch.Domain, models: ModelsStack, search: SearchConfig
) -> dict[str, str]:
    """What every search client reads: the backend, the domain URL, the embedding endpoint, and the
    mapping, boosts and fusion (the writer and the readers must agree on them)."""
    return env(
        search_backend="opensearch",
        opensearch_endpoint=f"https://{domain.domain_endpoint}",
        embedding_backend="sagemaker",
        embedding_endpoint=models.endpoints["embedding"].endpoint_name,
        **search.settings(),
    )


class IndexStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeployConfig,
        platform: PlatformStack,
        ingest: IngestStack,
        models: ModelsStack,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.search_roles: dict[str, iam.Role] = {
            spec.name: lambda_role(self, spec) for spec in TOPOLOGY.functions if spec.context in SEARCH_ACCESS
        }
        self.domain = self._domain(config, platform)
        self.search_environment = search_environment(self.domain, models, config.search)

        self.functions: dict[str, RaglineFunction] = context_functions(
            self,
            CONTEXT,
            config=config,
            environment={
                **self.search_environment,
                **env(
                    parsed_bucket=ingest.buckets["parsed"].bucket_name, event_bus=platform.bus.event_bus_name
                ),
            },
            queues=platform.queues,
            roles=self.search_roles,
        )
        for fn in self.functions.values():
            ingest.buckets["parsed"].grant_read(fn.role)  # claim check: chunks are stored, not sent
            models.grant_invoke("embedding", fn.role)
            if fn.spec.name not in QUIET:
                platform.bus.grant_put_events_to(fn.role)

    def _slow_logs(self, config: DeployConfig, domain_name: str) -> opensearch.LoggingOptions:
        """Search and indexing slow logs to CloudWatch (thresholds are index settings), plus the
        resource policy that lets the OpenSearch service write them, limited to this domain."""
        groups = {
            kind: logs.LogGroup(
                self,
                f"{kind}SlowLogs",
                retention=config.log_retention,
                removal_policy=config.cdk_removal_policy,
            )
            for kind in ("Search", "Index")
        }
        logs.ResourcePolicy(
            self,
            "SlowLogsPolicy",
            policy_statements=[
                iam.PolicyStatement(
                    principals=[iam.ServicePrincipal("es.amazonaws.com")],
                    actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                    resources=[group.log_group_arn for group in groups.values()],
                    conditions={
                        "StringEquals": {"aws:SourceAccount": self.account},
                        "ArnLike": {
                            "aws:SourceArn": self.format_arn(
                                service="es", resource="domain", resource_name=domain_name
                            )
                        },
                    },
                )
            ],
        )
        return opensearch.LoggingOptions(
            slow_search_log_enabled=True,
            slow_search_log_group=groups["Search"],
            slow_index_log_enabled=True,
            slow_index_log_group=groups["Index"],
        )

    def _domain(self, config: DeployConfig, platform: PlatformStack) -> opensearch.Domain:
        os_config = config.opensearch
        multi_az = os_config.instance_count > 1
        # Named, because its resource policy must name it: a Ref/GetAtt there would be a self-reference.
        domain_name = resource_name(config.stage)

        def paths(context: str) -> list[str]:
            return [
                self.format_arn(service="es", resource="domain", resource_name=f"{domain_name}/{path}")
                for path in SEARCH_PATHS[context]
            ]

        self.search_admin = iam.Role(
            self,
            "SearchAdminRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="ragline OpenSearch master user: maps the search roles (infra/cdk/custom/search_roles.py)",
        )
        domain = opensearch.Domain(
            self,
            "Search",
            domain_name=domain_name,
            version=opensearch.EngineVersion.open_search(os_config.engine_version),
            capacity=opensearch.CapacityConfig(
                data_nodes=os_config.instance_count,
                data_node_instance_type=os_config.instance_type,
                multi_az_with_standby_enabled=False,
            ),
            ebs=opensearch.EbsOptions(
                volume_size=os_config.volume_size_gib,
                volume_type=ec2.EbsDeviceVolumeType.GP3,
            ),
            zone_awareness=opensearch.ZoneAwarenessConfig(enabled=multi_az, availability_zone_count=2)
            if multi_az
            else None,
            node_to_node_encryption=True,
            encryption_at_rest=opensearch.EncryptionAtRestOptions(enabled=True, kms_key=platform.key),
            enforce_https=True,
            tls_security_policy=opensearch.TLSSecurityPolicy.TLS_1_2,
            removal_policy=config.cdk_removal_policy,
            logging=self._slow_logs(config, domain_name),
            # IAM (SigV4) *and* OpenSearch's own roles: the master is a role no function has;
            # search_roles.py maps the index roles to all_access and the retrieve roles to readall.
            fine_grained_access_control=opensearch.AdvancedSecurityOptions(
                master_user_arn=self.search_admin.role_arn
            ),
            # The logs' resource policy is made below: the L2's would be a Node.js custom resource.
            suppress_logs_resource_policy=True,
            # Seam: dedicated masters for production sizes (cdk-nag OS3; OS1 is a choice: infra/cdk/README.md).
        )
        # The resource policy goes on the CloudFormation resource itself: the L2 `access_policies` prop
        # would add a custom resource (a Node.js Lambda) calling UpdateDomainConfig instead.
        statements = []
        for spec_name, role in self.search_roles.items():
            context = TOPOLOGY.function(spec_name).context
            actions = list(SEARCH_ACCESS[context])
            statements.append(
                iam.PolicyStatement(
                    principals=[iam.ArnPrincipal(role.role_arn)], actions=actions, resources=paths(context)
                )
            )
            role.add_to_principal_policy(iam.PolicyStatement(actions=actions, resources=paths(context)))
        mappings = self.format_arn(
            service="es",
            resource="domain",
            resource_name=f"{domain_name}/_plugins/_security/api/rolesmapping/*",
        )
        admin = iam.PolicyStatement(actions=["es:ESHttpGet", "es:ESHttpPut"], resources=[mappings])
        self.search_admin.add_to_principal_policy(admin)
        statements.append(
            iam.PolicyStatement(
                principals=[iam.ArnPrincipal(self.search_admin.role_arn)],
                actions=admin.actions,
                resources=[mappings],
            )
        )
        cfn_domain = domain.node.default_child
        assert isinstance(cfn_domain, opensearch.CfnDomain)
        cfn_domain.access_policies = iam.PolicyDocument(statements=statements).to_json()
        self._map_search_roles(config, domain)
        return domain

    def _map_search_roles(self, config: DeployConfig, domain: opensearch.Domain) -> None:
        """A custom resource, run as the master user, that maps each search role to its OpenSearch
        role (SEARCH_ROLES) on every deploy."""
        function = asset_function(
            self,
            "SearchRoles",
            config=config,
            directory=CUSTOM_DIR,
            handler="search_roles.handler",
            timeout=Duration.minutes(2),
            role=self.search_admin,
            description="ragline: maps the search roles into OpenSearch fine-grained access control",
        )
        mappings: dict[str, list[str]] = {}
        for spec_name, role in self.search_roles.items():
            mappings.setdefault(SEARCH_ROLES[TOPOLOGY.function(spec_name).context], []).append(role.role_arn)
        resource = CfnCustomResource(self, "SearchRoleMappings", service_token=function.function_arn)
        resource.add_property_override("Endpoint", domain.domain_endpoint)
        resource.add_property_override("Mappings", mappings)
        resource.node.add_dependency(domain)
