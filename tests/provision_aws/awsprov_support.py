"""Builders and a Stubber harness for the AWS provisioning tests.

Every response built here is validated by ``botocore.stub.Stubber`` against the real EC2 /
ELBv2 service models, and every expected request is compared parameter by parameter.
"""

from __future__ import annotations

import boto3
from botocore.stub import ANY, Stubber

from provision.aws import constants as C
from provision.aws.clients import Clients, retry_config
from provision.aws.spec import default_vni

REGION = "us-east-1"
ACCOUNT = "123456789012"
VPC = "vpc-0a1b2c3d4e5f60718"
SUBNET = "subnet-0a1b2c3d4e5f60718"
NLB_ARN = f"arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:loadbalancer/net/mirror/0123456789abcdef"
NAME = "prod"
VNI = default_vni(NAME)


def eni_id(n: int) -> str:
    return f"eni-{n:017x}"


def inst_id(n: int) -> str:
    return f"i-{n:017x}"


def sess_id(n: int) -> str:
    return f"tms-{n:017x}"


def tgt_id(n: int) -> str:
    return f"tmt-{n:017x}"


def flt_id(n: int) -> str:
    return f"tmf-{n:017x}"


def rule_id(n: int) -> str:
    return f"tmfr-{n:017x}"


def our_tags(name: str = NAME, vpc: str | None = VPC, resource: str = "appliance-prod") -> list[dict]:
    tags = [
        {"Key": "Name", "Value": resource},
        {"Key": C.TAG_DEPLOYMENT, "Value": name},
        {"Key": C.TAG_MANAGED_BY, "Value": C.MANAGED_BY},
    ]
    if vpc:
        tags.append({"Key": C.TAG_VPC, "Value": vpc})
    return tags


def eni(n: int, *, instance: int | None = None, status: str = "in-use", itype: str = "interface",
        requester: str | None = None, description: str = "", ip: str | None = None, tags: dict | None = None,
        vpc: str = VPC) -> dict:
    data = {
        "NetworkInterfaceId": eni_id(n),
        "InterfaceType": itype,
        "Status": status,
        "SubnetId": SUBNET,
        "VpcId": vpc,
        "Description": description,
        "PrivateIpAddress": ip or f"10.0.1.{n % 250 + 1}",
        "PrivateIpAddresses": [{"PrivateIpAddress": ip or f"10.0.1.{n % 250 + 1}", "Primary": True}],
        "RequesterManaged": requester is not None,
        "TagSet": [{"Key": k, "Value": v} for k, v in (tags or {}).items()],
    }
    if requester:
        data["RequesterId"] = requester
    if instance is not None:
        data["Attachment"] = {"InstanceId": inst_id(instance), "Status": "attached", "DeviceIndex": 0}
    elif requester:
        data["Attachment"] = {"InstanceOwnerId": requester, "Status": "attached", "DeviceIndex": 1}
    return data


def instance(n: int, itype: str = "m5.large", *, state: str = "running", tags: dict | None = None) -> dict:
    return {
        "InstanceId": inst_id(n),
        "InstanceType": itype,
        "State": {"Name": state, "Code": 16},
        "Tags": [{"Key": k, "Value": v} for k, v in (tags or {}).items()],
    }


def itype_info(name: str, hypervisor: str | None = "nitro", bare_metal: bool = False) -> dict:
    info = {"InstanceType": name, "BareMetal": bare_metal}
    if hypervisor:
        info["Hypervisor"] = hypervisor
    return info


def target(n: int, *, nlb: str | None = NLB_ARN, eni: str | None = None, ours: bool = True, name: str = NAME) -> dict:
    data = {
        "TrafficMirrorTargetId": tgt_id(n),
        "Type": "network-load-balancer" if nlb else "network-interface",
        "OwnerId": ACCOUNT,
        "Tags": our_tags(name) if ours else [{"Key": "Name", "Value": "someone-else"}],
    }
    if nlb:
        data["NetworkLoadBalancerArn"] = nlb
    if eni:
        data["NetworkInterfaceId"] = eni
    return data


def api_rule(rule, rid: str, filter_id: str) -> dict:
    data = {
        "TrafficMirrorFilterRuleId": rid,
        "TrafficMirrorFilterId": filter_id,
        "TrafficDirection": rule.direction,
        "RuleNumber": rule.number,
        "RuleAction": rule.action,
        "DestinationCidrBlock": rule.dst_cidr,
        "SourceCidrBlock": rule.src_cidr,
        "Description": rule.description,
    }
    if rule.protocol is not None:
        data["Protocol"] = rule.protocol
    if rule.dst_ports:
        data["DestinationPortRange"] = {"FromPort": rule.dst_ports[0], "ToPort": rule.dst_ports[1]}
    if rule.src_ports:
        data["SourcePortRange"] = {"FromPort": rule.src_ports[0], "ToPort": rule.src_ports[1]}
    return data


def mirror_filter(n: int, rules=(), *, ours: bool = True, name: str = NAME, first_rule: int = 1) -> dict:
    fid = flt_id(n)
    ingress, egress = [], []
    for i, rule in enumerate(rules):
        (ingress if rule.direction == "ingress" else egress).append(api_rule(rule, rule_id(first_rule + i), fid))
    return {
        "TrafficMirrorFilterId": fid,
        "IngressFilterRules": ingress,
        "EgressFilterRules": egress,
        "NetworkServices": [],
        "Description": "f",
        "Tags": our_tags(name) if ours else [],
    }


def session(n: int, eni_n: int, *, target_n: int = 1, filter_n: int = 1, number: int = 1, vni: int | None = VNI,
            ours: bool = True, name: str = NAME, packet_length: int | None = None) -> dict:
    data = {
        "TrafficMirrorSessionId": sess_id(n),
        "TrafficMirrorTargetId": tgt_id(target_n),
        "TrafficMirrorFilterId": flt_id(filter_n),
        "NetworkInterfaceId": eni_id(eni_n),
        "OwnerId": ACCOUNT,
        "SessionNumber": number,
        "Tags": our_tags(name, resource=f"appliance-{name}-{eni_id(eni_n)}") if ours else [],
    }
    if vni is not None:
        data["VirtualNetworkId"] = vni
    if packet_length is not None:
        data["PacketLength"] = packet_length
    return data


def session_tags(eni_n: int, name: str = NAME) -> list[dict]:
    return [{"ResourceType": "traffic-mirror-session", "Tags": our_tags(name, resource=f"appliance-{name}-{eni_id(eni_n)}")}]


class Harness:
    """Real boto3 clients with Stubbers, plus a log of every API call actually made."""

    def __init__(self):
        config = retry_config("standard", 3)
        self.ec2 = boto3.client("ec2", region_name=REGION, config=config)
        self.elbv2 = boto3.client("elbv2", region_name=REGION, config=config)
        self.ec2_stub = Stubber(self.ec2)
        self.elb_stub = Stubber(self.elbv2)
        self.calls: list[tuple[str, str, dict]] = []  # (iam prefix, operation, params)
        for client in (self.ec2, self.elbv2):
            client.meta.events.register("provide-client-params.*.*", self._record)
        self.ec2_stub.activate()
        self.elb_stub.activate()

    def _record(self, params, model, **kwargs):
        self.calls.append((model.service_model.signing_name, model.name, dict(params)))

    def clients(self) -> Clients:
        return Clients(ec2=self.ec2, _elbv2_factory=lambda: self.elbv2, region=REGION)

    @property
    def operations(self) -> list[str]:
        return [op for _, op, _ in self.calls]

    def actions(self) -> set[str]:
        return {f"{prefix}:{op}" for prefix, op, _ in self.calls}

    def params_of(self, operation: str) -> list[dict]:
        return [p for _, op, p in self.calls if op == operation]

    def verify(self):
        self.ec2_stub.assert_no_pending_responses()
        self.elb_stub.assert_no_pending_responses()

    # -- queueing helpers, in the order the code calls them -------------------------------

    def state(self, targets=(), filters=(), sessions=()):
        s = self.ec2_stub
        s.add_response("describe_traffic_mirror_targets", {"TrafficMirrorTargets": list(targets)}, {})
        s.add_response("describe_traffic_mirror_filters", {"TrafficMirrorFilters": list(filters)}, {})
        s.add_response("describe_traffic_mirror_sessions", {"TrafficMirrorSessions": list(sessions)}, {})

    def listeners(self, *listeners, arn: str = NLB_ARN):
        self.elb_stub.add_response(
            "describe_listeners",
            {"Listeners": [{"Port": port, "Protocol": proto, "LoadBalancerArn": arn} for proto, port in listeners]},
            {"LoadBalancerArn": arn},
        )

    def discovery(self, enis, instances=(), types=(), *, vpc: str = VPC, extra_filters=()):
        filters = [{"Name": "vpc-id", "Values": [vpc]}, *extra_filters]
        self.ec2_stub.add_response("describe_network_interfaces", {"NetworkInterfaces": list(enis)},
                                   {"Filters": filters})
        ids = sorted({e["Attachment"]["InstanceId"] for e in enis if (e.get("Attachment") or {}).get("InstanceId")})
        if ids:
            self.ec2_stub.add_response(
                "describe_instances",
                {"Reservations": [{"ReservationId": "r-1", "Instances": list(instances)}]},
                {"Filters": [{"Name": "instance-id", "Values": ids}]},
            )
        if types:
            self.ec2_stub.add_response(
                "describe_instance_types", {"InstanceTypes": list(types)},
                {"InstanceTypes": sorted({t["InstanceType"] for t in types})},
            )

    def orphan_lookup(self, eni_ids, found=()):
        self.ec2_stub.add_response(
            "describe_network_interfaces", {"NetworkInterfaces": list(found)},
            {"Filters": [{"Name": "network-interface-id", "Values": sorted(eni_ids)}]},
        )


__all__ = ["ANY", "Harness"]
