"""GCP: a regional managed instance group behind an internal passthrough load balancer whose
forwarding rule is a Packet Mirroring collector, plus the mirroring policy itself.

Traffic path: mirrored VMs --(Packet Mirroring)--> forwarding rule (is_mirroring_collector,
all ports, INTERNAL) --> regional backend service --> MIG instances (capture on the NIC) --> Kafka.
"""

from __future__ import annotations

from cdktn import GcsBackend, TerraformOutput, TerraformResourceLifecycle, TerraformStack
from cdktn_provider_google.compute_firewall import ComputeFirewall, ComputeFirewallAllow
from cdktn_provider_google.compute_forwarding_rule import ComputeForwardingRule
from cdktn_provider_google.compute_health_check import ComputeHealthCheck, ComputeHealthCheckHttpHealthCheck
from cdktn_provider_google.compute_instance_template import (
    ComputeInstanceTemplate,
    ComputeInstanceTemplateDisk,
    ComputeInstanceTemplateDiskDiskEncryptionKey,
    ComputeInstanceTemplateNetworkInterface,
    ComputeInstanceTemplateServiceAccount,
    ComputeInstanceTemplateShieldedInstanceConfig,
)
from cdktn_provider_google.compute_packet_mirroring import (
    ComputePacketMirroring,
    ComputePacketMirroringCollectorIlb,
    ComputePacketMirroringFilter,
    ComputePacketMirroringMirroredResources,
    ComputePacketMirroringMirroredResourcesInstances,
    ComputePacketMirroringMirroredResourcesSubnetworks,
    ComputePacketMirroringNetwork,
)
from cdktn_provider_google.compute_region_autoscaler import (
    ComputeRegionAutoscaler,
    ComputeRegionAutoscalerAutoscalingPolicy,
    ComputeRegionAutoscalerAutoscalingPolicyCpuUtilization,
    ComputeRegionAutoscalerAutoscalingPolicyMetric,
)
from cdktn_provider_google.compute_region_backend_service import (
    ComputeRegionBackendService,
    ComputeRegionBackendServiceBackend,
)
from cdktn_provider_google.compute_region_instance_group_manager import (
    ComputeRegionInstanceGroupManager,
    ComputeRegionInstanceGroupManagerAutoHealingPolicies,
    ComputeRegionInstanceGroupManagerUpdatePolicy,
    ComputeRegionInstanceGroupManagerVersion,
)
from cdktn_provider_google.project_iam_member import ProjectIamMember
from cdktn_provider_google.provider import GoogleProvider
from cdktn_provider_google.service_account import ServiceAccount
from constructs import Construct

from appliance_infra import HEALTH_PATH, HEALTH_PORT
from appliance_infra.config import GcpConfig
from appliance_infra.user_data import BOOT_ATTRIBUTE, render_boot_environment

# Source ranges of Google Cloud health check probes (and of internal passthrough LB probes).
GOOGLE_HEALTH_CHECK_RANGES = ["35.191.0.0/16", "130.211.0.0/22"]
MAX_ZONES_PER_REGION = 4
RECEIVED_BYTES_METRIC = "compute.googleapis.com/instance/network/received_bytes_count"


class ApplianceGcpStack(TerraformStack):
    def __init__(self, scope: Construct, cfg: GcpConfig):
        super().__init__(scope, cfg.stack_name)
        self.cfg = cfg
        n = cfg.name
        tag = cfg.collector_network_tag
        labels = {"application": "mirror-appliance", "managed-by": "cdktn", **cfg.labels}

        provider = GoogleProvider(self, "google", project=cfg.project, region=cfg.region)
        # Set through an override: cdktn snake-cases the keys of provider-level maps
        # ("managed-by" would become "managed_by").
        provider.add_override("default_labels", labels)
        if cfg.backend:
            GcsBackend(self, bucket=cfg.backend.bucket, prefix=cfg.backend.prefix or f"mirror-appliance/{cfg.stack_name}")

        # ------------------------------------------------------------------ identity
        # A dedicated service account: the runtime calls no Google API (its tags and metadata come
        # from the metadata server), so it gets no role unless service_account_roles asks for the
        # logging/monitoring writer roles an ops agent would need.
        sa = ServiceAccount(
            self,
            "appliance-sa",
            account_id=f"{n}-vm",
            display_name="Mirror appliance collector instances",
        )
        for role in cfg.service_account_roles:
            ProjectIamMember(
                self,
                f"sa-{role.split('/')[-1].replace('.', '-')}",
                project=cfg.project,
                role=role,
                member=f"serviceAccount:{sa.email}",
            )

        # ------------------------------------------------------------------ compute
        # Read by the image's `appliance boot` from the metadata server (deploy/README.md).
        self.boot_environment = render_boot_environment(cfg.appliance, "gcp")
        template = ComputeInstanceTemplate(
            self,
            "instance-template",
            name_prefix=f"{n}-",
            description="Mirror appliance (Packet Mirroring collector)",
            machine_type=cfg.machine_type,
            region=cfg.region,
            can_ip_forward=False,
            tags=[tag],
            labels=labels,
            disk=[
                ComputeInstanceTemplateDisk(
                    boot=True,
                    auto_delete=True,
                    source_image=cfg.image_ref,
                    disk_type=cfg.disk_type,
                    disk_size_gb=cfg.disk_size_gb,
                    disk_encryption_key=(
                        ComputeInstanceTemplateDiskDiskEncryptionKey(kms_key_self_link=cfg.disk_kms_key_self_link)
                        if cfg.disk_kms_key_self_link
                        else None
                    ),
                )
            ],
            # No access_config: no external IP.
            network_interface=[ComputeInstanceTemplateNetworkInterface(subnetwork=cfg.subnetwork_url)],
            metadata={
                BOOT_ATTRIBUTE: self.boot_environment,
                "block-project-ssh-keys": "true",
                "enable-oslogin": "true",
                "serial-port-enable": "false",
            },
            service_account=ComputeInstanceTemplateServiceAccount(email=sa.email, scopes=["cloud-platform"]),
            shielded_instance_config=ComputeInstanceTemplateShieldedInstanceConfig(
                enable_secure_boot=True, enable_vtpm=True, enable_integrity_monitoring=True
            ),
            # Templates are immutable: create the new one before the MIG lets go of the old.
            lifecycle=TerraformResourceLifecycle(create_before_destroy=True),
        )

        health = ComputeHealthCheck(
            self,
            "healthz",
            name=f"{n}-healthz",
            description="Appliance /healthz",
            check_interval_sec=10,
            timeout_sec=5,
            healthy_threshold=2,
            unhealthy_threshold=3,
            http_health_check=ComputeHealthCheckHttpHealthCheck(port=HEALTH_PORT, request_path=HEALTH_PATH),
        )

        mig = ComputeRegionInstanceGroupManager(
            self,
            "mig",
            name=f"{n}-mig",
            base_instance_name=n,
            region=cfg.region,
            distribution_policy_zones=cfg.zones,
            version=[ComputeRegionInstanceGroupManagerVersion(name="primary", instance_template=template.self_link_unique)],
            auto_healing_policies=ComputeRegionInstanceGroupManagerAutoHealingPolicies(
                health_check=health.id, initial_delay_sec=180
            ),
            # Surge first, never take a collector away during a rollout. A regional MIG needs a
            # fixed surge of 0 or at least its zone count; regions have at most 4 zones today.
            update_policy=ComputeRegionInstanceGroupManagerUpdatePolicy(
                type="PROACTIVE",
                minimal_action="REPLACE",
                max_surge_fixed=len(cfg.zones) if cfg.zones else MAX_ZONES_PER_REGION,
                max_unavailable_fixed=0,
                instance_redistribution_type="PROACTIVE",
            ),
            wait_for_instances=False,
        )
        ComputeRegionAutoscaler(
            self,
            "autoscaler",
            name=f"{n}-autoscaler",
            region=cfg.region,
            target=mig.id,
            autoscaling_policy=ComputeRegionAutoscalerAutoscalingPolicy(
                min_replicas=cfg.min_replicas,
                max_replicas=cfg.max_replicas,
                cooldown_period=180,
                cpu_utilization=ComputeRegionAutoscalerAutoscalingPolicyCpuUtilization(target=cfg.cpu_target),
                metric=[
                    ComputeRegionAutoscalerAutoscalingPolicyMetric(
                        name=RECEIVED_BYTES_METRIC,
                        target=cfg.network_in_target_bytes_per_second,
                        type="DELTA_PER_SECOND",
                    )
                ],
            ),
        )

        # ------------------------------------------------------------------ collector load balancer
        backend = ComputeRegionBackendService(
            self,
            "collector-backend",
            name=f"{n}-collector",
            description="Mirror appliance collectors",
            region=cfg.region,
            load_balancing_scheme="INTERNAL",
            protocol="TCP",
            network=cfg.network_url,
            health_checks=[health.id],
            connection_draining_timeout_sec=10,
            backend=[ComputeRegionBackendServiceBackend(group=mig.instance_group, balancing_mode="CONNECTION")],
        )
        forwarding_rule = ComputeForwardingRule(
            self,
            "collector",
            name=f"{n}-collector",
            description="Packet Mirroring collector",
            region=cfg.region,
            load_balancing_scheme="INTERNAL",
            is_mirroring_collector=True,
            ip_protocol="TCP",
            all_ports=True,
            backend_service=backend.id,
            network=cfg.network_url,
            subnetwork=cfg.subnetwork_url,
            labels=labels,
        )

        # ------------------------------------------------------------------ firewall
        ComputeFirewall(
            self,
            "allow-mirrored",
            name=f"{n}-allow-mirrored",
            description="Mirrored traffic from the mirrored sources to the collectors",
            network=cfg.network_url,
            direction="INGRESS",
            priority=1000,
            source_ranges=list(cfg.mirrored_source_ranges),
            target_tags=[tag],
            allow=[ComputeFirewallAllow(protocol=p) for p in cfg.mirror_ip_protocols],
        )
        ComputeFirewall(
            self,
            "allow-health-checks",
            name=f"{n}-allow-health-checks",
            description="Google health check probes to the appliance /healthz port only",
            network=cfg.network_url,
            direction="INGRESS",
            priority=1000,
            source_ranges=GOOGLE_HEALTH_CHECK_RANGES,
            target_tags=[tag],
            allow=[ComputeFirewallAllow(protocol="tcp", ports=[str(HEALTH_PORT)])],
        )

        # ------------------------------------------------------------------ packet mirroring
        policy = ComputePacketMirroring(
            self,
            "policy",
            name=f"{n}-policy",
            description="Mirror selected traffic to the appliance collectors",
            region=cfg.region,
            priority=cfg.policy_priority,
            network=ComputePacketMirroringNetwork(url=cfg.network_url),
            collector_ilb=ComputePacketMirroringCollectorIlb(url=forwarding_rule.id),
            mirrored_resources=ComputePacketMirroringMirroredResources(
                subnetworks=[ComputePacketMirroringMirroredResourcesSubnetworks(url=u) for u in cfg.mirrored_subnetwork_urls]
                or None,
                instances=[ComputePacketMirroringMirroredResourcesInstances(url=u) for u in cfg.mirrored_instance_urls]
                or None,
                tags=list(cfg.mirrored_tags) or None,
            ),
            filter=ComputePacketMirroringFilter(
                ip_protocols=list(cfg.mirror_ip_protocols),
                cidr_ranges=list(cfg.mirror_cidr_ranges) or None,
                direction=cfg.mirror_direction,
            ),
        )

        TerraformOutput(self, "forwarding_rule_id", value=forwarding_rule.id, description="Collector forwarding rule")
        TerraformOutput(self, "forwarding_rule_ip", value=forwarding_rule.ip_address, description="Collector address")
        TerraformOutput(self, "packet_mirroring_policy_id", value=policy.id, description="Packet Mirroring policy")
        TerraformOutput(self, "instance_group_manager", value=mig.name, description="Regional MIG name")
        TerraformOutput(self, "service_account_email", value=sa.email, description="Collector service account")
