"""Read the traffic-mirror resources that exist in the region (all pages)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from provision.aws import constants as C
from provision.aws.errors import aws_errors, iam_action


def tags_of(resource: dict) -> dict[str, str]:
    tags = resource.get("Tags")
    if tags is None:
        tags = resource.get("TagSet")
    return {t["Key"]: t.get("Value", "") for t in tags or []}


def is_ours(resource: dict, name: str) -> bool:
    """Created by deployment ``name``: both appliance tags must be present and match."""
    tags = tags_of(resource)
    return tags.get(C.TAG_DEPLOYMENT) == name and tags.get(C.TAG_MANAGED_BY) == C.MANAGED_BY


def deployment_tags(name: str, vpc: str | None, resource_name: str) -> list[dict]:
    tags = [
        {"Key": "Name", "Value": resource_name},
        {"Key": C.TAG_DEPLOYMENT, "Value": name},
        {"Key": C.TAG_MANAGED_BY, "Value": C.MANAGED_BY},
    ]
    if vpc:
        tags.append({"Key": C.TAG_VPC, "Value": vpc})
    return tags


def tag_spec(resource_type: str, name: str, vpc: str | None, resource_name: str) -> list[dict]:
    return [{"ResourceType": resource_type, "Tags": deployment_tags(name, vpc, resource_name)}]


def paginate(client, operation: str, key: str, **kwargs) -> list[dict]:
    items: list[dict] = []
    with aws_errors(iam_action("".join(word.title() for word in operation.split("_")))):
        for page in client.get_paginator(operation).paginate(**kwargs):
            items.extend(page.get(key, []))
    return items


@dataclass
class MirrorState:
    """Every target, filter and session visible in the region, plus this deployment's subset."""

    name: str
    targets: list[dict]
    filters: list[dict]
    sessions: list[dict]

    @property
    def our_targets(self) -> list[dict]:
        return [t for t in self.targets if is_ours(t, self.name)]

    @property
    def our_filters(self) -> list[dict]:
        return [f for f in self.filters if is_ours(f, self.name)]

    @property
    def our_sessions(self) -> list[dict]:
        return [s for s in self.sessions if is_ours(s, self.name)]

    @property
    def foreign_sessions(self) -> list[dict]:
        return [s for s in self.sessions if not is_ours(s, self.name)]

    def sessions_on(self, eni_id: str) -> list[dict]:
        return [s for s in self.sessions if s.get("NetworkInterfaceId") == eni_id]

    def foreign_users(self, *, target_id: str | None = None, filter_id: str | None = None) -> list[str]:
        """Sessions not of this deployment that use the given target / filter."""
        out = []
        for s in self.foreign_sessions:
            if target_id and s.get("TrafficMirrorTargetId") == target_id:
                out.append(s["TrafficMirrorSessionId"])
            elif filter_id and s.get("TrafficMirrorFilterId") == filter_id:
                out.append(s["TrafficMirrorSessionId"])
        return out

    def most_used(self, key: str, candidates: list[str]) -> str | None:
        """Of ``candidates``, the id our sessions reference most (ties: lowest id)."""
        if not candidates:
            return None
        counts = Counter(s.get(key) for s in self.our_sessions)
        return sorted(candidates, key=lambda c: (-counts.get(c, 0), c))[0]

    def vpc_conflicts(self, vpc: str) -> list[str]:
        """Resources of this deployment that were created for another VPC."""
        out = []
        for res in self.our_targets + self.our_filters + self.our_sessions:
            other = tags_of(res).get(C.TAG_VPC)
            if other and other != vpc:
                out.append(f"{_rid(res)} ({other})")
        return out


def _rid(res: dict) -> str:
    return res.get("TrafficMirrorSessionId") or res.get("TrafficMirrorFilterId") or res.get("TrafficMirrorTargetId") or "?"


def fetch_state(ec2, name: str) -> MirrorState:
    """Describe all traffic mirror targets, filters and sessions.

    The describe APIs document no tag filters, so we list everything (an account holds at
    most 10,000 of each) and select on tags here.
    """
    targets = paginate(ec2, "describe_traffic_mirror_targets", "TrafficMirrorTargets")
    filters = paginate(ec2, "describe_traffic_mirror_filters", "TrafficMirrorFilters")
    sessions = paginate(ec2, "describe_traffic_mirror_sessions", "TrafficMirrorSessions")
    return MirrorState(name=name, targets=targets, filters=filters, sessions=sessions)
