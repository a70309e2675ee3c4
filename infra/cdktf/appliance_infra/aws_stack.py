"""AWS: an autoscaled appliance fleet behind an internal NLB that is a VPC Traffic Mirroring target.

Traffic path: mirror source ENI --VXLAN/UDP 4789--> NLB (UDP listener, source-IP stickiness)
--> appliance instances (ASG, launch template) --> Kafka.

Why source-IP stickiness: AWS sets the VXLAN outer source port from a hash of the inner flow, and
that hash is not symmetric, so the two directions of one TCP connection arrive with different
outer 5-tuples. NLB's default 5-tuple hashing would then split a connection across instances and
neither could pair requests with responses. Stickiness on the outer source IP (the mirrored ENI)
keeps everything one ENI mirrors on one appliance.
"""

from __future__ import annotations

import base64
import ipaddress
import json

from cdktn import S3Backend, TerraformOutput, TerraformResourceLifecycle, TerraformStack, Token
from cdktn_provider_aws.autoscaling_group import (
    AutoscalingGroup,
    AutoscalingGroupInstanceRefresh,
    AutoscalingGroupInstanceRefreshPreferences,
    AutoscalingGroupLaunchTemplate,
    AutoscalingGroupTag,
)
from cdktn_provider_aws.autoscaling_policy import (
    AutoscalingPolicy,
    AutoscalingPolicyTargetTrackingConfiguration,
    AutoscalingPolicyTargetTrackingConfigurationPredefinedMetricSpecification,
)
from cdktn_provider_aws.data_aws_ami import DataAwsAmi, DataAwsAmiFilter
from cdktn_provider_aws.data_aws_caller_identity import DataAwsCallerIdentity
from cdktn_provider_aws.data_aws_partition import DataAwsPartition
from cdktn_provider_aws.data_aws_subnet import DataAwsSubnet
from cdktn_provider_aws.data_aws_vpc import DataAwsVpc
from cdktn_provider_aws.ec2_traffic_mirror_filter import Ec2TrafficMirrorFilter
from cdktn_provider_aws.ec2_traffic_mirror_filter_rule import (
    Ec2TrafficMirrorFilterRule,
    Ec2TrafficMirrorFilterRuleDestinationPortRange,
    Ec2TrafficMirrorFilterRuleSourcePortRange,
)
from cdktn_provider_aws.ec2_traffic_mirror_session import Ec2TrafficMirrorSession
from cdktn_provider_aws.ec2_traffic_mirror_target import Ec2TrafficMirrorTarget
from cdktn_provider_aws.iam_instance_profile import IamInstanceProfile
from cdktn_provider_aws.iam_role import IamRole
from cdktn_provider_aws.iam_role_policy import IamRolePolicy
from cdktn_provider_aws.launch_template import (
    LaunchTemplate,
    LaunchTemplateBlockDeviceMappings,
    LaunchTemplateBlockDeviceMappingsEbs,
    LaunchTemplateIamInstanceProfile,
    LaunchTemplateMetadataOptions,
    LaunchTemplateMonitoring,
    LaunchTemplateNetworkInterfaces,
    LaunchTemplateTagSpecifications,
)
from cdktn_provider_aws.lb import Lb
from cdktn_provider_aws.lb_listener import LbListener, LbListenerDefaultAction
from cdktn_provider_aws.lb_target_group import LbTargetGroup, LbTargetGroupHealthCheck, LbTargetGroupStickiness
from cdktn_provider_aws.provider import AwsProvider, AwsProviderDefaultTags
from cdktn_provider_aws.security_group import SecurityGroup
from cdktn_provider_aws.vpc_security_group_egress_rule import VpcSecurityGroupEgressRule
from cdktn_provider_aws.vpc_security_group_ingress_rule import VpcSecurityGroupIngressRule
from constructs import Construct

from appliance_infra import HEALTH_PATH, HEALTH_PORT, VXLAN_PORT
from appliance_infra.config import AwsConfig
from appliance_infra.user_data import render_boot_environment

DNS_PORT = 53
PROTO_TCP = 6

# Exactly what runs on the instance needs from AWS APIs.
SSM_CHANNEL_ACTIONS = [
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
]


def instance_policy(cfg: AwsConfig, partition: str, account_id: str) -> dict | None:
    """The instance role's only permissions, or None when it needs none.

    The runtime itself calls no AWS API: `appliance boot` reads user data and instance
    tags from IMDSv2, and pairs go to Kafka.  The only grants are for SSM Session Manager
    (optional, default on): operator shell access without SSH or open ports.  These are
    the documented minimum for Session Manager; UpdateInstanceInformation is scoped to
    instances in this account and region, the ssmmessages channel actions support no
    resource scoping.
    """
    if not cfg.ssm_session_manager:
        return None
    region_only = {"StringEquals": {"aws:RequestedRegion": cfg.region}}
    statements = [
        {
            "Sid": "SessionManagerRegistration",
            "Effect": "Allow",
            "Action": ["ssm:UpdateInstanceInformation"],
            "Resource": f"arn:{partition}:ec2:{cfg.region}:{account_id}:instance/*",
        },
        {
            "Sid": "SessionManagerChannels",
            "Effect": "Allow",
            "Action": SSM_CHANNEL_ACTIONS,
            "Resource": "*",
            "Condition": region_only,
        },
    ]
    return {"Version": "2012-10-17", "Statement": statements}


EC2_TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "Ec2AssumeRole",
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


def _cidr_args(cidr: str) -> dict[str, str]:
    """cidr_ipv4 / cidr_ipv6 for a literal CIDR; tokens (looked-up subnet CIDRs) are IPv4."""
    if Token.is_unresolved(cidr):
        return {"cidr_ipv4": cidr}
    return {"cidr_ipv6": cidr} if ipaddress.ip_network(cidr).version == 6 else {"cidr_ipv4": cidr}


class ApplianceAwsStack(TerraformStack):
    def __init__(self, scope: Construct, cfg: AwsConfig):
        super().__init__(scope, cfg.stack_name)
        self.cfg = cfg
        n = cfg.name
        tags = {"Application": "mirror-appliance", "ManagedBy": "cdktn", "Stack": cfg.stack_name, **cfg.tags}

        AwsProvider(self, "aws", region=cfg.region, default_tags=[AwsProviderDefaultTags(tags=tags)])
        if cfg.backend:
            S3Backend(
                self,
                bucket=cfg.backend.bucket,
                key=cfg.backend.key or f"mirror-appliance/{cfg.stack_name}.tfstate",
                region=cfg.backend.region or cfg.region,
                encrypt=True,
                use_lockfile=True,
            )

        partition = DataAwsPartition(self, "partition")
        account = DataAwsCallerIdentity(self, "account")

        # ------------------------------------------------------------------ network access
        sg = SecurityGroup(
            self,
            "appliance-sg",
            name=f"{n}-sg",
            description="Mirror appliance: VXLAN from mirrored sources, health checks from the NLB",
            vpc_id=cfg.vpc_id,
            revoke_rules_on_delete=True,
            tags={"Name": f"{n}-sg"},
        )
        for i, cidr in enumerate(cfg.mirrored_cidrs):
            VpcSecurityGroupIngressRule(
                self,
                f"ingress-vxlan-{i}",
                security_group_id=sg.id,
                ip_protocol="udp",
                from_port=VXLAN_PORT,
                to_port=VXLAN_PORT,
                description=f"VXLAN (mirrored traffic) from {cidr}",
                **_cidr_args(cidr),
            )

        # NLB health checks come from the NLB's own addresses inside its subnets.
        if cfg.health_check_cidrs:
            health_sources = list(cfg.health_check_cidrs)
        else:
            health_sources = [
                DataAwsSubnet(self, f"nlb-subnet-{i}", id=subnet).cidr_block
                for i, subnet in enumerate(cfg.load_balancer_subnet_ids)
            ]
        for i, cidr in enumerate(health_sources):
            VpcSecurityGroupIngressRule(
                self,
                f"ingress-health-{i}",
                security_group_id=sg.id,
                ip_protocol="tcp",
                from_port=HEALTH_PORT,
                to_port=HEALTH_PORT,
                description="Appliance /healthz from the load balancer subnets",
                **_cidr_args(cidr),
            )

        kafka_cidrs = list(cfg.kafka_cidrs) if cfg.kafka_cidrs else [DataAwsVpc(self, "vpc", id=cfg.vpc_id).cidr_block]
        for i, cidr in enumerate(kafka_cidrs):
            for port in cfg.egress_kafka_ports:
                VpcSecurityGroupEgressRule(
                    self,
                    f"egress-kafka-{i}-{port}",
                    security_group_id=sg.id,
                    ip_protocol="tcp",
                    from_port=port,
                    to_port=port,
                    description=f"Kafka brokers on port {port}",
                    **_cidr_args(cidr),
                )
        for i, cidr in enumerate(cfg.https_egress_cidrs):
            VpcSecurityGroupEgressRule(
                self,
                f"egress-https-{i}",
                security_group_id=sg.id,
                ip_protocol="tcp",
                from_port=443,
                to_port=443,
                description="HTTPS to AWS APIs (SSM Session Manager)",
                **_cidr_args(cidr),
            )

        # ------------------------------------------------------------------ identity
        role = IamRole(
            self,
            "instance-role",
            name=f"{n}-instance",
            description="Mirror appliance instances",
            assume_role_policy=json.dumps(EC2_TRUST_POLICY),
            permissions_boundary=cfg.permissions_boundary_arn,
            max_session_duration=3600,
        )
        policy = instance_policy(cfg, partition.partition, account.account_id)
        if policy is not None:
            IamRolePolicy(
                self,
                "instance-policy",
                name=f"{n}-runtime",
                role=role.id,
                policy=json.dumps(policy),
            )
        profile = IamInstanceProfile(self, "instance-profile", name=f"{n}-instance", role=role.name)

        # ------------------------------------------------------------------ compute
        # Read by the image's `appliance boot` through IMDSv2 (deploy/README.md).
        self.user_data = render_boot_environment(cfg.appliance, "aws")
        # The encrypted mapping must name the AMI's own root device: under any other name it
        # would add a second volume and leave the root volume as the snapshot made it.
        root_device = cfg.root_device_name or DataAwsAmi(
            self, "ami", filter=[DataAwsAmiFilter(name="image-id", values=[cfg.ami_id])]
        ).root_device_name
        # appliance:role=collector: `appliance provision aws` never mirrors the collectors'
        # own ENIs (it would send the fleet's traffic back to itself)
        instance_tags = {**tags, "Name": n, "appliance:role": "collector"}
        launch_template = LaunchTemplate(
            self,
            "launch-template",
            name=n,
            description="Mirror appliance (VXLAN collector)",
            image_id=cfg.ami_id,
            instance_type=cfg.instance_type,
            update_default_version=True,
            ebs_optimized="true",
            iam_instance_profile=LaunchTemplateIamInstanceProfile(arn=profile.arn),
            metadata_options=LaunchTemplateMetadataOptions(
                http_endpoint="enabled",
                http_tokens="required",
                http_put_response_hop_limit=1,
                instance_metadata_tags="enabled",  # appliance-<variable> tags override user data
            ),
            # Detailed monitoring: 1-minute NetworkIn datapoints for the scaling policy.
            monitoring=LaunchTemplateMonitoring(enabled=True),
            network_interfaces=[
                LaunchTemplateNetworkInterfaces(
                    device_index=0,
                    associate_public_ip_address="false",
                    delete_on_termination="true",
                    security_groups=[sg.id],
                )
            ],
            block_device_mappings=[
                LaunchTemplateBlockDeviceMappings(
                    device_name=root_device,
                    ebs=LaunchTemplateBlockDeviceMappingsEbs(
                        encrypted="true",
                        kms_key_id=cfg.ebs_kms_key_arn,
                        volume_type="gp3",
                        volume_size=cfg.root_volume_size_gib,
                        delete_on_termination="true",
                    ),
                )
            ],
            user_data=base64.b64encode(self.user_data.encode()).decode(),
            tag_specifications=[
                LaunchTemplateTagSpecifications(resource_type=kind, tags=instance_tags)
                for kind in ("instance", "volume", "network-interface")
            ],
        )

        # ------------------------------------------------------------------ load balancer
        nlb = Lb(
            self,
            "nlb",
            name=f"{n}-nlb",
            internal=True,
            load_balancer_type="network",
            ip_address_type="ipv4",
            subnets=cfg.load_balancer_subnet_ids,
            enable_cross_zone_load_balancing=cfg.cross_zone_load_balancing,
            enable_deletion_protection=cfg.deletion_protection,
        )
        target_group = LbTargetGroup(
            self,
            "vxlan-targets",
            name=f"{n}-vxlan",
            port=VXLAN_PORT,
            protocol="UDP",
            target_type="instance",
            vpc_id=cfg.vpc_id,
            deregistration_delay="30",
            stickiness=LbTargetGroupStickiness(type="source_ip", enabled=True),
            health_check=LbTargetGroupHealthCheck(
                enabled=True,
                protocol="HTTP",
                port=str(HEALTH_PORT),
                path=HEALTH_PATH,
                matcher="200",
                interval=10,
                timeout=5,
                healthy_threshold=3,
                unhealthy_threshold=3,
            ),
        )
        listener = LbListener(
            self,
            "vxlan-listener",
            load_balancer_arn=nlb.arn,
            port=VXLAN_PORT,
            protocol="UDP",
            default_action=[LbListenerDefaultAction(type="forward", target_group_arn=target_group.arn)],
        )

        asg = AutoscalingGroup(
            self,
            "asg",
            name=n,
            min_size=cfg.min_size,
            max_size=cfg.max_size,
            vpc_zone_identifier=cfg.subnet_ids,
            launch_template=AutoscalingGroupLaunchTemplate(
                id=launch_template.id, version=Token.as_string(launch_template.latest_version)
            ),
            target_group_arns=[target_group.arn],
            health_check_type="ELB",
            health_check_grace_period=cfg.health_check_grace_seconds,
            default_instance_warmup=cfg.health_check_grace_seconds,
            metrics_granularity="1Minute",
            enabled_metrics=[
                "GroupDesiredCapacity",
                "GroupInServiceInstances",
                "GroupPendingInstances",
                "GroupTerminatingInstances",
                "GroupTotalInstances",
            ],
            # Launch before terminate: a rollout never lowers collector capacity.
            instance_refresh=AutoscalingGroupInstanceRefresh(
                strategy="Rolling",
                preferences=AutoscalingGroupInstanceRefreshPreferences(
                    min_healthy_percentage=100, max_healthy_percentage=200
                ),
            ),
            tag=[AutoscalingGroupTag(key="Name", value=n, propagate_at_launch=True)],
            # The scaling policy owns the desired capacity after creation.
            lifecycle=TerraformResourceLifecycle(ignore_changes=["desired_capacity"]),
        )
        AutoscalingPolicy(
            self,
            "scale-on-network-in",
            name=f"{n}-network-in",
            autoscaling_group_name=asg.name,
            policy_type="TargetTrackingScaling",
            target_tracking_configuration=AutoscalingPolicyTargetTrackingConfiguration(
                target_value=cfg.network_in_target_bytes,
                predefined_metric_specification=AutoscalingPolicyTargetTrackingConfigurationPredefinedMetricSpecification(
                    predefined_metric_type="ASGAverageNetworkIn"
                ),
            ),
        )

        # ------------------------------------------------------------------ traffic mirroring
        target = Ec2TrafficMirrorTarget(
            self,
            "mirror-target",
            description=f"{n}: NLB {VXLAN_PORT}/udp in front of the appliance fleet",
            network_load_balancer_arn=nlb.arn,
            depends_on=[listener],
            tags={"Name": n},
        )
        mirror_filter = Ec2TrafficMirrorFilter(
            self,
            "mirror-filter",
            description=f"{n}: all TCP except DNS",
            tags={"Name": n},
        )
        self._filter_rules(mirror_filter)

        sessions = []
        for eni in cfg.source_eni_ids:
            sessions.append(
                Ec2TrafficMirrorSession(
                    self,
                    f"session-{eni}",
                    description=f"{n}: mirror {eni}",
                    network_interface_id=eni,
                    session_number=cfg.session_number,
                    traffic_mirror_filter_id=mirror_filter.id,
                    traffic_mirror_target_id=target.id,
                    virtual_network_id=cfg.virtual_network_id,
                    tags={"Name": f"{n}-{eni}"},
                )
            )

        # ------------------------------------------------------------------ outputs
        TerraformOutput(self, "traffic_mirror_target_id", value=target.id, description="Traffic mirror target (the NLB)")
        TerraformOutput(self, "traffic_mirror_filter_id", value=mirror_filter.id, description="Traffic mirror filter")
        TerraformOutput(self, "nlb_dns_name", value=nlb.dns_name, description="Internal NLB DNS name")
        TerraformOutput(self, "asg_name", value=asg.name, description="Autoscaling group name")
        TerraformOutput(self, "security_group_id", value=sg.id, description="Appliance security group")
        TerraformOutput(
            self,
            "traffic_mirror_session_ids",
            value=[s.id for s in sessions],
            description="Sessions created for source_eni_ids",
        )

    def _filter_rules(self, mirror_filter: Ec2TrafficMirrorFilter) -> None:
        """Reject DNS first (the lowest rule number wins), then accept all TCP, both directions.

        Only TCP is accepted, so UDP DNS is never mirrored; the explicit rejects take DNS over
        TCP (zone transfers, large answers) out of the accept-all-TCP rule.
        Per direction: 3 rules for IPv4, 3 more when mirror_ipv6 is set.
        """
        families = [("0.0.0.0/0", "", 0)]
        if self.cfg.mirror_ipv6:
            families.append(("::/0", "6", 1))
        for direction in ("ingress", "egress"):
            for any_addr, suffix, offset in families:
                common = {
                    "traffic_mirror_filter_id": mirror_filter.id,
                    "traffic_direction": direction,
                    "protocol": PROTO_TCP,
                    "source_cidr_block": any_addr,
                    "destination_cidr_block": any_addr,
                }
                Ec2TrafficMirrorFilterRule(
                    self,
                    f"filter-{direction}-reject-dns-dst{suffix}",
                    description=f"Reject DNS over TCP (to port {DNS_PORT})",
                    rule_number=10 + 20 * offset,
                    rule_action="reject",
                    destination_port_range=Ec2TrafficMirrorFilterRuleDestinationPortRange(
                        from_port=DNS_PORT, to_port=DNS_PORT
                    ),
                    **common,
                )
                Ec2TrafficMirrorFilterRule(
                    self,
                    f"filter-{direction}-reject-dns-src{suffix}",
                    description=f"Reject DNS over TCP (from port {DNS_PORT})",
                    rule_number=20 + 20 * offset,
                    rule_action="reject",
                    source_port_range=Ec2TrafficMirrorFilterRuleSourcePortRange(from_port=DNS_PORT, to_port=DNS_PORT),
                    **common,
                )
                Ec2TrafficMirrorFilterRule(
                    self,
                    f"filter-{direction}-accept-tcp{suffix}",
                    description="Accept all TCP" + (" (IPv6)" if suffix else ""),
                    rule_number=100 + 10 * offset,
                    rule_action="accept",
                    **common,
                )
