"""Reconcile planner: desired deployment + what exists -> ordered list of actions.

Pure code. The plan's item order is the apply order:
target, filter, rule deletes, rule creates, session deletes, updates, creates, keeps,
stale filters (rules first) and stale targets, then the skipped ENIs.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from provision.aws import constants as C
from provision.aws.discovery import Eni
from provision.aws.spec import DeploymentSpec, Rule, UsageError, per_session_vni
from provision.aws.state import MirrorState, tag_spec

NEW_TARGET = "(new target)"
NEW_FILTER = "(new filter)"

CHANGE_ACTIONS = ("create", "update", "delete")


@dataclass
class Item:
    action: str  # create | update | keep | delete | skip
    kind: str  # target | filter | rule | session | eni
    id: str | None = None
    eni: str | None = None
    instance: str | None = None
    detail: str = ""
    op: str | None = None  # what apply does; None for keep / skip
    params: dict = field(default_factory=dict)
    depends: list[str] = field(default_factory=list)  # session ids that must not have failed
    info: dict = field(default_factory=dict)  # session facts for the session map
    status: str | None = None  # after apply: ok | failed | blocked | not-run
    error: str | None = None

    @property
    def is_change(self) -> bool:
        return self.action in CHANGE_ACTIONS


@dataclass
class Plan:
    name: str
    vpc: str | None
    items: list[Item]
    enis: list[Eni] = field(default_factory=list)
    target_id: str | None = None
    filter_id: str | None = None
    blockers: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Accept rules of the desired filter that mirror any address (0.0.0.0/0, ::/0), in words:
    # shown prominently in every plan.
    any_address: list[str] = field(default_factory=list)

    @property
    def changes(self) -> list[Item]:
        return [i for i in self.items if i.is_change]


def _session_desc(name: str, eni: Eni) -> str:
    who = eni.instance_id or eni.requester or "ENI"
    return f"appliance {name}: {eni.id} ({who})"


def packet_length_matches(desired: int | None, actual: int | None) -> bool:
    """No length means the whole packet; AWS reports 8500 for that on NLB targets."""
    if desired is None:
        return actual in (None, C.NLB_DEFAULT_PACKET_LENGTH)
    return desired == actual


def free_session_number(used: set[int]) -> int | None:
    for n in range(C.SESSION_NUMBER_MIN, C.SESSION_NUMBER_MAX + 1):
        if n not in used:
            return n
    return None


def _target_matches(target: dict, spec: DeploymentSpec) -> bool:
    kind, value = spec.target.kind, spec.target.value
    if kind == "nlb":
        return target.get("NetworkLoadBalancerArn") == value
    if kind == "eni":
        return target.get("NetworkInterfaceId") == value
    if kind == "id":
        return target.get("TrafficMirrorTargetId") == value
    return False


def _resolve_target(spec: DeploymentSpec, state: MirrorState) -> tuple[Item, str | None]:
    ours = state.our_targets
    if spec.target.kind is None:
        chosen = state.most_used("TrafficMirrorTargetId", [t["TrafficMirrorTargetId"] for t in ours])
        if chosen:
            return Item("keep", "target", chosen, detail="created by this deployment"), chosen
        used = state.most_used("TrafficMirrorTargetId",
                               sorted({s["TrafficMirrorTargetId"] for s in state.our_sessions}))
        if used:
            return Item("keep", "target", used, detail="existing target in use by this deployment (not created by it)"), used
        raise UsageError(
            f"deployment {spec.name} has no mirror target yet: pass --target-nlb ARN, --target-eni ENI or --target-id ID"
        )
    mine = sorted((t for t in ours if _target_matches(t, spec)), key=lambda t: t["TrafficMirrorTargetId"])
    if mine:
        tid = mine[0]["TrafficMirrorTargetId"]
        return Item("keep", "target", tid, detail=f"{spec.target.label()}, created by this deployment"), tid
    others = sorted((t for t in state.targets if _target_matches(t, spec)), key=lambda t: t["TrafficMirrorTargetId"])
    if others:
        tid = others[0]["TrafficMirrorTargetId"]
        return Item("keep", "target", tid,
                    detail=f"{spec.target.label()}: existing target reused, not created by this deployment, never deleted by it"), tid
    if spec.target.kind == "id":
        raise UsageError(f"traffic mirror target {spec.target.value} does not exist in this region")
    params: dict = {
        "Description": f"appliance {spec.name} mirror target",
        "TagSpecifications": tag_spec("traffic-mirror-target", spec.name, spec.vpc, f"appliance-{spec.name}"),
    }
    if spec.target.kind == "nlb":
        params["NetworkLoadBalancerArn"] = spec.target.value
    else:
        params["NetworkInterfaceId"] = spec.target.value
    return Item("create", "target", NEW_TARGET, detail=spec.target.label(), op="create-target", params=params), None


def _rules_of(flt: dict) -> list[Rule]:
    return [Rule.from_api(r) for r in flt.get("IngressFilterRules", []) + flt.get("EgressFilterRules", [])]


def _in_use_elsewhere(kind: str, rid: str, users: list[str]) -> Item:
    return Item("skip", kind, rid,
                detail=f"not deleted: used by {len(users)} session(s) of other deployments ({', '.join(users[:3])})")


def filter_delete_items(flt: dict, state: MirrorState, reason: str) -> list[Item]:
    """Delete a filter of this deployment: its rules first, then the filter (unless others use it)."""
    fid = flt["TrafficMirrorFilterId"]
    users = state.foreign_users(filter_id=fid)
    if users:
        return [_in_use_elsewhere("filter", fid, users)]
    depends = [s["TrafficMirrorSessionId"] for s in state.our_sessions if s.get("TrafficMirrorFilterId") == fid]
    items = [
        Item("delete", "rule", r.rule_id, detail=r.summary(), op="delete-rule",
             params={"TrafficMirrorFilterRuleId": r.rule_id}, depends=depends)
        for r in sorted(_rules_of(flt), key=Rule.key)
    ]
    items.append(Item("delete", "filter", fid, detail=reason, op="delete-filter",
                      params={"TrafficMirrorFilterId": fid}, depends=depends))
    return items


def target_delete_items(tgt: dict, state: MirrorState, reason: str) -> list[Item]:
    tid = tgt["TrafficMirrorTargetId"]
    users = state.foreign_users(target_id=tid)
    if users:
        return [_in_use_elsewhere("target", tid, users)]
    depends = [s["TrafficMirrorSessionId"] for s in state.our_sessions if s.get("TrafficMirrorTargetId") == tid]
    return [Item("delete", "target", tid, detail=reason, op="delete-target",
                 params={"TrafficMirrorTargetId": tid}, depends=depends)]


def _session_info(session_id: str | None, eni: Eni | None, eni_id: str, vni, number) -> dict:
    return {
        "session_id": session_id,
        "eni": eni_id,
        "instance": eni.instance_id if eni else None,
        "vni": vni,
        "session_number": number,
        "private_ips": list(eni.private_ips) if eni else [],
    }


def orphan_reason(eni_id: str, raw: dict | None, spec: DeploymentSpec) -> str:
    if raw is None:
        return f"ENI {eni_id} no longer exists"
    if raw.get("VpcId") and raw.get("VpcId") != spec.vpc:
        return f"ENI {eni_id} is in {raw.get('VpcId')}, outside {spec.vpc}"
    return f"ENI {eni_id} no longer matches --subnet/--instance"


def build_plan(spec: DeploymentSpec, state: MirrorState, enis: list[Eni],
               orphans: dict[str, dict | None] | None = None) -> Plan:
    """Compute the actions that make the region match ``spec``."""
    conflicts = state.vpc_conflicts(spec.vpc)
    if conflicts:
        raise UsageError(
            f"deployment {spec.name} already has resources in another VPC: {', '.join(conflicts[:3])}; use another --name"
        )
    orphans = orphans or {}
    plan = Plan(name=spec.name, vpc=spec.vpc, items=[], enis=enis)

    # -- target ---------------------------------------------------------------------------
    target_item, target_id = _resolve_target(spec, state)
    plan.target_id = target_id
    want_target = target_id or NEW_TARGET

    # -- filter and rules -----------------------------------------------------------------
    desired = spec.rules
    plan.any_address = [f"filter rule {r.direction} #{r.number} accepts {r.src_cidr} -> {r.dst_cidr} "
                        f"(peer {r.peer_cidr}: any address)" for r in desired if r.action == "accept" and r.any_address]
    our_filters = state.our_filters
    filter_id = state.most_used("TrafficMirrorFilterId", [f["TrafficMirrorFilterId"] for f in our_filters])
    rule_items: list[Item] = []
    if filter_id:
        flt = next(f for f in our_filters if f["TrafficMirrorFilterId"] == filter_id)
        existing = _rules_of(flt)
        want_keys = {r.key() for r in desired}
        have_keys: set = set()
        for rule in sorted(existing, key=Rule.key):
            if rule.key() in want_keys and rule.key() not in have_keys:
                have_keys.add(rule.key())
                continue
            rule_items.append(Item("delete", "rule", rule.rule_id, detail=rule.summary(), op="delete-rule",
                                   params={"TrafficMirrorFilterRuleId": rule.rule_id}))
        missing = [r for r in desired if r.key() not in have_keys]
        kept = len(desired) - len(missing)
        filter_item = Item("keep", "filter", filter_id,
                           detail=f"{spec.filter.summary()}; {kept} rule(s) unchanged")
    else:
        missing = list(desired)
        filter_item = Item("create", "filter", NEW_FILTER, detail=spec.filter.summary(), op="create-filter",
                           params={"Description": f"appliance {spec.name}: {spec.filter.summary()}",
                                   "TagSpecifications": tag_spec("traffic-mirror-filter", spec.name, spec.vpc,
                                                                 f"appliance-{spec.name}")})
    rule_items += [Item("create", "rule", None, detail=r.summary(), op="create-rule", params={"rule": r})
                   for r in missing]
    plan.filter_id = filter_id
    want_filter = filter_id or NEW_FILTER

    # -- sessions -------------------------------------------------------------------------
    ours_by_eni: dict[str, list[dict]] = defaultdict(list)
    for s in state.our_sessions:
        ours_by_eni[s["NetworkInterfaceId"]].append(s)
    for sessions in ours_by_eni.values():
        sessions.sort(key=lambda s: (s.get("SessionNumber", 0), s["TrafficMirrorSessionId"]))

    deletes: list[Item] = []
    updates: list[Item] = []
    creates: list[Item] = []
    keeps: list[Item] = []
    skips: list[Item] = []

    vni_count: dict[int | None, int] = defaultdict(int)
    for s in state.our_sessions:
        if s.get("VirtualNetworkId") is not None:
            vni_count[s["VirtualNetworkId"]] += 1
    taken_vnis: set[int] = set()
    if spec.vni_mode == "per-session":
        # Keep the VNIs that already identify exactly one of our sessions; reassign the rest.
        for eni in enis:
            mine = ours_by_eni.get(eni.id, [])
            if eni.selected and mine and vni_count.get(mine[0].get("VirtualNetworkId"), 0) == 1:
                taken_vnis.add(mine[0]["VirtualNetworkId"])

    def desired_vni(eni: Eni, current: int | None) -> int:
        if spec.vni_mode == "shared":
            return spec.vni
        if current is not None and current in taken_vnis and vni_count.get(current) == 1:
            return current
        vni = per_session_vni(spec.name, eni.id, taken_vnis)
        taken_vnis.add(vni)
        return vni

    eni_target_sources = 0
    for eni in enis:
        mine = ours_by_eni.get(eni.id, [])
        if not eni.selected:
            skips.append(Item("skip", "eni", eni.id, eni=eni.id, instance=eni.instance_id, detail=eni.reason or ""))
            for s in mine:
                deletes.append(Item("delete", "session", s["TrafficMirrorSessionId"], eni=eni.id,
                                    instance=eni.instance_id, detail=f"ENI no longer selected: {eni.reason}",
                                    op="delete-session", params={"TrafficMirrorSessionId": s["TrafficMirrorSessionId"]}))
            continue
        eni_target_sources += 1
        foreign = [s for s in state.sessions_on(eni.id) if s not in mine]
        if mine:
            session = mine[0]
            sid = session["TrafficMirrorSessionId"]
            for extra in mine[1:]:
                deletes.append(Item("delete", "session", extra["TrafficMirrorSessionId"], eni=eni.id,
                                    instance=eni.instance_id, detail=f"duplicate: {sid} already mirrors this ENI",
                                    op="delete-session",
                                    params={"TrafficMirrorSessionId": extra["TrafficMirrorSessionId"]}))
            vni = desired_vni(eni, session.get("VirtualNetworkId"))
            changes: dict = {}
            notes = []
            if session.get("TrafficMirrorTargetId") != want_target:
                changes["TrafficMirrorTargetId"] = want_target
                notes.append(f"target {session.get('TrafficMirrorTargetId')} -> {want_target}")
            if session.get("TrafficMirrorFilterId") != want_filter:
                changes["TrafficMirrorFilterId"] = want_filter
                notes.append(f"filter {session.get('TrafficMirrorFilterId')} -> {want_filter}")
            if session.get("VirtualNetworkId") != vni:
                changes["VirtualNetworkId"] = vni
                notes.append(f"VNI {session.get('VirtualNetworkId')} -> {vni}")
            if not packet_length_matches(spec.packet_length, session.get("PacketLength")):
                if spec.packet_length is None:
                    changes["RemoveFields"] = ["packet-length"]
                    notes.append(f"packet length {session.get('PacketLength')} -> full packet")
                else:
                    changes["PacketLength"] = spec.packet_length
                    notes.append(f"packet length {session.get('PacketLength') or 'full'} -> {spec.packet_length}")
            info = _session_info(sid, eni, eni.id, vni, session.get("SessionNumber"))
            if changes:
                updates.append(Item("update", "session", sid, eni=eni.id, instance=eni.instance_id,
                                    detail="; ".join(notes), op="modify-session",
                                    params={"TrafficMirrorSessionId": sid, **changes}, info=info))
            else:
                keeps.append(Item("keep", "session", sid, eni=eni.id, instance=eni.instance_id,
                                  detail=f"session #{session.get('SessionNumber')}, VNI {vni}", info=info))
            continue
        number = free_session_number({int(s["SessionNumber"]) for s in foreign if s.get("SessionNumber") is not None})
        if number is None:  # cannot happen with the 3-session limit, but be explicit
            skips.append(Item("skip", "eni", eni.id, eni=eni.id, instance=eni.instance_id, detail="no free session number"))
            continue
        vni = desired_vni(eni, None)
        detail = f"session #{number}, VNI {vni}"
        earlier = sorted(s["TrafficMirrorSessionId"] for s in foreign if s.get("SessionNumber", 0) < number)
        if earlier:
            detail += (f"; note: lower-numbered session(s) {', '.join(earlier)} are evaluated first and "
                       "packets they accept are not mirrored here")
        params = {
            "NetworkInterfaceId": eni.id,
            "TrafficMirrorTargetId": want_target,
            "TrafficMirrorFilterId": want_filter,
            "SessionNumber": number,
            "VirtualNetworkId": vni,
            "Description": _session_desc(spec.name, eni),
            "TagSpecifications": tag_spec("traffic-mirror-session", spec.name, spec.vpc,
                                          f"appliance-{spec.name}-{eni.id}"),
        }
        if spec.packet_length is not None:
            params["PacketLength"] = spec.packet_length
        creates.append(Item("create", "session", None, eni=eni.id, instance=eni.instance_id, detail=detail,
                            op="create-session", params=params,
                            info=_session_info(None, eni, eni.id, vni, number)))

    known = {e.id for e in enis}
    for eni_id in sorted(set(ours_by_eni) - known):
        reason = orphan_reason(eni_id, orphans.get(eni_id), spec)
        raw = orphans.get(eni_id) or {}
        for s in ours_by_eni[eni_id]:
            deletes.append(Item("delete", "session", s["TrafficMirrorSessionId"], eni=eni_id,
                                instance=(raw.get("Attachment") or {}).get("InstanceId"), detail=reason,
                                op="delete-session", params={"TrafficMirrorSessionId": s["TrafficMirrorSessionId"]}))

    # -- stale resources of this deployment ------------------------------------------------
    cleanup: list[Item] = []
    for flt in sorted(our_filters, key=lambda f: f["TrafficMirrorFilterId"]):
        if flt["TrafficMirrorFilterId"] != filter_id:
            cleanup += filter_delete_items(flt, state, f"superseded by {want_filter}")
    for tgt in sorted(state.our_targets, key=lambda t: t["TrafficMirrorTargetId"]):
        if tgt["TrafficMirrorTargetId"] != target_id:
            cleanup += target_delete_items(tgt, state, f"superseded by {want_target}")

    plan.items = [target_item, filter_item, *rule_items, *deletes, *updates, *creates, *keeps, *cleanup, *skips]

    is_eni_target = spec.target.kind == "eni" or any(
        t.get("TrafficMirrorTargetId") == target_id and t.get("NetworkInterfaceId") for t in state.targets)
    if is_eni_target and eni_target_sources > 10:
        plan.warnings.append(
            f"{eni_target_sources} sources on an ENI target: ENI targets accept 10 sources (100 on the largest "
            "instance sizes); use an NLB target (--target-nlb) for more")
    return plan


def build_teardown_plan(state: MirrorState) -> Plan:
    """Everything deployment ``state.name`` created, in dependency order; nothing else."""
    items: list[Item] = []
    for s in sorted(state.our_sessions, key=lambda s: s["TrafficMirrorSessionId"]):
        items.append(Item("delete", "session", s["TrafficMirrorSessionId"], eni=s.get("NetworkInterfaceId"),
                          detail=f"session #{s.get('SessionNumber')}, VNI {s.get('VirtualNetworkId')}",
                          op="delete-session", params={"TrafficMirrorSessionId": s["TrafficMirrorSessionId"]}))
    for flt in sorted(state.our_filters, key=lambda f: f["TrafficMirrorFilterId"]):
        items += filter_delete_items(flt, state, "created by this deployment")
    for tgt in sorted(state.our_targets, key=lambda t: t["TrafficMirrorTargetId"]):
        items += target_delete_items(tgt, state, "created by this deployment")
    return Plan(name=state.name, vpc=None, items=items)
