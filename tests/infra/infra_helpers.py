"""Shared helpers for the infra/cdktf tests (a uniquely named module, safe to import from tests).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

# The jsii runtime prints a large banner on Node 20; it is not a test failure.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

REPO = Path(__file__).resolve().parents[2]
CDKTF_DIR = REPO / "infra" / "cdktf"
EXAMPLES = CDKTF_DIR / "examples"
if str(CDKTF_DIR) not in sys.path:
    sys.path.insert(0, str(CDKTF_DIR))


def example(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text())


def aws_minimal_raw() -> dict:
    """Only the required AWS settings: every default is exercised."""
    raw = example("aws.json")
    keep = {"cloud", "region", "vpc_id", "subnet_ids", "ami_id", "mirrored_cidrs"}
    minimal = {k: v for k, v in raw.items() if k in keep}
    minimal["stack_name"] = "aws-minimal"
    minimal["name"] = "mirror-min"
    minimal["appliance"] = {"kafka_bootstrap_servers": "kafka.internal:9094"}
    return minimal


def aws_full_raw() -> dict:
    raw = example("aws.json")
    raw.update(
        stack_name="aws-full",
        name="mirror-full",
        nlb_subnet_ids=["subnet-0f0f0f0f0f0f0f0f1", "subnet-0f0f0f0f0f0f0f0f2"],
        mirrored_cidrs=["10.20.0.0/16", "2001:db8:20::/56"],
        health_check_cidrs=["10.40.1.0/24", "10.40.2.0/24"],
        kafka_ports=[9094, 9096],
        https_egress_cidrs=["10.0.0.0/16"],
        root_device_name="/dev/sda1",
        ebs_kms_key_arn="arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        permissions_boundary_arn="arn:aws:iam::123456789012:policy/PlatformBoundary",
        ssm_session_manager=False,
        mirror_ipv6=True,
        deletion_protection=False,
        backend={"bucket": "platform-tf-state", "key": "mirror/aws-full.tfstate"},
        tags={"cost-center": "cc-42", "DataClass": "internal"},
    )
    return raw


def gcp_full_raw() -> dict:
    raw = example("gcp.json")
    raw.update(
        stack_name="gcp-full",
        name="mirror-full",
        network="projects/shared-vpc-host/global/networks/shared",
        subnetwork="projects/shared-vpc-host/regions/europe-west1/subnetworks/collectors",
        mirrored_subnetworks=[],
        mirrored_tags=[],
        mirrored_instances=["europe-west1-b/api-1", "projects/other/zones/europe-west1-c/instances/api-2"],
        mirror_ip_protocols=["tcp", "udp"],
        mirror_cidr_ranges=["10.20.0.0/16"],
        zones=["europe-west1-b", "europe-west1-c", "europe-west1-d"],
        disk_kms_key_self_link="projects/kms-proj/locations/europe-west1/keyRings/ring/cryptoKeys/disk",
        service_account_roles=["roles/logging.logWriter", "roles/monitoring.metricWriter"],
        backend={"bucket": "platform-tf-state"},
        labels={"cost-center": "cc-42"},
    )
    return raw


@dataclass(frozen=True)
class Synth:
    """One synthesized stack: the Terraform JSON as the CLI would deploy it."""

    name: str
    text: str  # cdktn Testing.synth() output, for the Testing.* matchers
    tf: dict  # the same, parsed
    stack: object
    cfg: object

    def resources(self, kind: str) -> dict[str, dict]:
        return self.tf.get("resource", {}).get(kind, {})

    def one(self, kind: str) -> dict:
        found = self.resources(kind)
        assert len(found) == 1, f"expected one {kind}, found {sorted(found)}"
        return next(iter(found.values()))


@dataclass(frozen=True)
class Synthesized:
    outdir: Path
    stacks: dict[str, Synth]

    def __getitem__(self, name: str) -> Synth:
        return self.stacks[name]
