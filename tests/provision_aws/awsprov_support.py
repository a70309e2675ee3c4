"""Builders and a Stubber harness for the AWS provisioning tests.

Every response built here is validated by ``botocore.stub.Stubber`` against the real EC2 /
ELBv2 service models, and every expected request is compared parameter by parameter.
"""

from __future__ import annotations

import boto3
from botocore.stub import ANY, Stubber

from provision.aws import constants as C
from provision.aws.clients import Clients, retry_config
from provision.aws.spec import FilterSpec, default_vni, desired_rules

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


def eni_by_id(eni: str) -> dict:
    return {"NetworkInterfaceId": eni, "InterfaceType": "interface", "Status": "in-use", "SubnetId": SUBNET,
            "VpcId": VPC}


def instance(n: int, itype: str = "m5.large", *, state: str = "running", tags: dict | None = None) -> dict:
    return {
        "InstanceId": inst_id(n),
        "InstanceType": itype,
        "VpcId": VPC,
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

    def preflight(self, *, vpc: str = VPC, vpc_exists: bool = True, subnets=(), instances=(),
                  target_eni: str | None = None, nlb: str | None = NLB_ARN, listeners=(("UDP", 4789),)):
        """What ``provision aws`` looks up before planning: the VPC, --subnet / --instance,
        the target ENI or NLB (and its listeners). ``subnets``/``instances``: API objects."""
        s = self.ec2_stub
        s.add_response("describe_vpcs", {"Vpcs": [{"VpcId": vpc, "State": "available"}] if vpc_exists else []},
                       {"Filters": [{"Name": "vpc-id", "Values": [vpc]}]})
        if subnets:
            s.add_response("describe_subnets", {"Subnets": list(subnets)},
                           {"Filters": [{"Name": "subnet-id", "Values": sorted(x["SubnetId"] for x in subnets)}]})
        if instances:
            s.add_response("describe_instances", {"Reservations": [{"Instances": list(instances)}]},
                           {"Filters": [{"Name": "instance-id", "Values": sorted(x["InstanceId"] for x in instances)}]})
        if target_eni:
            s.add_response("describe_network_interfaces", {"NetworkInterfaces": [eni_by_id(target_eni)]},
                           {"Filters": [{"Name": "network-interface-id", "Values": [target_eni]}]})
        if nlb:
            self.elb_stub.add_response(
                "describe_load_balancers",
                {"LoadBalancers": [{"LoadBalancerArn": nlb, "Type": "network", "Scheme": "internal"}]},
                {"LoadBalancerArns": [nlb]})
            if listeners:
                self.listeners(*listeners, arn=nlb)

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




# -- the shared scenario: a VPC with mirrorable and non-mirrorable ENIs ----------------------

# --yes: these flows are about the AWS calls; the confirmation prompt has its own tests.
BASE = ("provision", "aws", "--vpc", VPC, "--name", NAME, "--target-nlb", NLB_ARN, "--yes")
DEFAULT_RULES = desired_rules(FilterSpec(protocols=[6]), NAME)
MUTATING_PREFIXES = ("Create", "Delete", "Modify")


def vpc_enis():
    return [
        eni(1, instance=1),
        eni(2, instance=2),
        eni(3, itype="network_load_balancer", requester="amazon-elb", description="ELB net/mirror/0123"),
        eni(4, requester="amazon-rds", description="RDSNetworkInterface"),
        eni(5, status="available"),
        eni(6, instance=6),
    ]


def vpc_instances():
    return [instance(1, "m5.large"), instance(2, "t2.micro"),
            instance(6, "m5.large", tags={"appliance:role": "collector"})]


TYPES = [itype_info("m5.large", "nitro"), itype_info("t2.micro", "xen")]


def expected_rule_params(filter_id):
    """The default filter, written out by hand: DNS rejects first, then accept all TCP."""
    out = []
    for direction in ("ingress", "egress"):
        common = {"TrafficMirrorFilterId": filter_id, "TrafficDirection": direction,
                  "DestinationCidrBlock": "0.0.0.0/0", "SourceCidrBlock": "0.0.0.0/0", "Description": ANY}
        out.append({**common, "RuleNumber": 100, "RuleAction": "reject", "Protocol": 6,
                    "DestinationPortRange": {"FromPort": 53, "ToPort": 53}})
        out.append({**common, "RuleNumber": 110, "RuleAction": "reject", "Protocol": 6,
                    "SourcePortRange": {"FromPort": 53, "ToPort": 53}})
        out.append({**common, "RuleNumber": 200, "RuleAction": "accept", "Protocol": 6})
    return out


def queue_session_create(h, eni_n, *, sid_n, number=1, vni=VNI, instance_n=None, who=None, target_n=1, filter_n=1,
                         extra=None, error=None):
    params = {
        "NetworkInterfaceId": eni_id(eni_n),
        "TrafficMirrorTargetId": tgt_id(target_n),
        "TrafficMirrorFilterId": flt_id(filter_n),
        "SessionNumber": number,
        "VirtualNetworkId": vni,
        "Description": f"appliance {NAME}: {eni_id(eni_n)} ({who or inst_id(instance_n)})",
        "TagSpecifications": session_tags(eni_n),
        **(extra or {}),
    }
    if error:
        h.ec2_stub.add_client_error("create_traffic_mirror_session", service_error_code=error[0],
                                    service_message=error[1], expected_params=params)
    else:
        h.ec2_stub.add_response("create_traffic_mirror_session",
                                {"TrafficMirrorSession": session(sid_n, eni_n, number=number, vni=vni)}, params)


def queue_first_run(h, *, with_sessions=True, listener=True):
    h.preflight(listeners=(("UDP", 4789),) if listener else None)
    h.state()
    h.discovery(vpc_enis(), vpc_instances(), TYPES)
    h.ec2_stub.add_response(
        "create_traffic_mirror_target", {"TrafficMirrorTarget": target(1)},
        {"NetworkLoadBalancerArn": NLB_ARN, "Description": f"appliance {NAME} mirror target",
         "TagSpecifications": [{"ResourceType": "traffic-mirror-target", "Tags": our_tags()}]},
    )
    h.ec2_stub.add_response(
        "create_traffic_mirror_filter", {"TrafficMirrorFilter": mirror_filter(1)},
        {"Description": ANY, "TagSpecifications": [{"ResourceType": "traffic-mirror-filter", "Tags": our_tags()}]},
    )
    for i, params in enumerate(expected_rule_params(flt_id(1))):
        h.ec2_stub.add_response("create_traffic_mirror_filter_rule",
                                {"TrafficMirrorFilterRule": {"TrafficMirrorFilterRuleId": rule_id(i + 1)}}, params)
    if with_sessions:
        queue_session_create(h, 1, sid_n=1, instance_n=1)
        queue_session_create(h, 4, sid_n=4, who="RDS")


def existing_state():
    return dict(targets=[target(1)], filters=[mirror_filter(1, DEFAULT_RULES)],
                sessions=[session(1, 1), session(4, 4)])


def spec_args(**overrides):
    """An argparse namespace as ``appliance provision aws`` builds it, with defaults."""
    from argparse import Namespace

    values = dict(name=NAME, vpc=VPC, subnet=None, instance=None, exclude_instance=None, target_nlb=None,
                  target_eni=None, target_id=None, vni=None, vni_mode="shared", packet_length=None, protocol=None,
                  ports=None, cidr=None, include_dns=False, tag=None, exclude_tag=None,
                  skip_instance_type_check=False, skip_listener_check=False)
    values.update(overrides)
    return Namespace(**values)


# -- the CLI as a separate process (moto server, real terminal) --------------------------------


def run_cli_process(argv, env: dict, *, answer: str | None = None, stdin=None, timeout: float = 90):
    """Run ``python -m appliance ARGV`` in a child process. With ``answer``, stdin is a real
    terminal (a pty) on which ``answer`` is typed; otherwise ``stdin`` (default /dev/null).
    Returns (exit code, stdout, stderr)."""
    import os
    import pty
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    master = slave = None
    if answer is not None:
        master, slave = pty.openpty()
        stdin = slave
    try:
        proc = subprocess.Popen([sys.executable, "-m", "appliance", *argv], cwd=root, env=env, text=True,
                                stdin=subprocess.DEVNULL if stdin is None else stdin,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if master is not None:
            os.write(master, answer.encode())
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err
    finally:
        for fd in (master, slave):
            if fd is not None:
                os.close(fd)
