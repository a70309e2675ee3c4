"""Facts about EC2 Traffic Mirroring that the provisioner relies on.

Sources (checked when this was written; AWS revises these lists, so
``--skip-instance-type-check`` lets AWS itself decide):

* Quotas: https://docs.aws.amazon.com/vpc/latest/mirroring/traffic-mirroring-quotas.html
  (3 sessions per source ENI, 10 rules per filter, 10,000 sessions per account).
* Source instance types: https://docs.aws.amazon.com/vpc/latest/mirroring/traffic-mirroring-limits.html
  ("Traffic Mirroring is not available on the following virtualized Nitro instance types",
  "not available on bare metal instances", "available only on the following non-Nitro
  instance types: C4, D2, G3, G3s, H1, I3, M4, P2, P3, R4, X1, and X1e", T2 excluded).
* CreateTrafficMirrorSession API reference: SessionNumber 1-32766, PacketLength 1-8500
  (NLB targets report 8500 when no length is set), VirtualNetworkId is the 24-bit VXLAN VNI.
"""

from __future__ import annotations

# Tags written on everything a deployment creates. ``appliance:deployment`` is the key
# used to find a deployment again; nothing without it is ever modified or deleted.
TAG_DEPLOYMENT = "appliance:deployment"
TAG_MANAGED_BY = "appliance:managed-by"
TAG_VPC = "appliance:vpc"
MANAGED_BY = "mirror-appliance"

# ENIs (or their instances) carrying this tag belong to the appliance fleet itself and are
# never mirrored: mirroring the collectors would feed their own VXLAN traffic back to them.
TAG_ROLE = "appliance:role"
COLLECTOR_ROLE = "collector"

MAX_SESSIONS_PER_ENI = 3
MAX_RULES_PER_FILTER = 10
SESSION_NUMBER_MIN = 1
SESSION_NUMBER_MAX = 32766
VNI_MIN = 1
VNI_MAX = 16777215  # 2**24 - 1
PACKET_LENGTH_MAX = 8500
NLB_DEFAULT_PACKET_LENGTH = 8500
VXLAN_PORT = 4789
DNS_PORT = 53

PROTO_TCP = 6
PROTO_UDP = 17

# Requester-managed ENIs that AWS allows as mirror sources, matched on RequesterId.
MIRRORABLE_REQUESTERS = {
    "amazon-rds": "RDS",
    "amazon-elasticache": "ElastiCache",
}
# Fallback on the ENI description for the same two services.
MIRRORABLE_DESCRIPTION_PREFIXES = {
    "RDSNetworkInterface": "RDS",
    "ElastiCache ": "ElastiCache",
}

# Xen (non-Nitro) families that AWS does support as mirror sources.
XEN_SUPPORTED_FAMILIES = frozenset(
    {"c4", "d2", "g3", "g3s", "h1", "i3", "m4", "p2", "p3", "r4", "x1", "x1e"}
)

# Nitro families that AWS documents as NOT available as mirror sources.
NITRO_UNSUPPORTED_FAMILIES = frozenset(
    {
        # general purpose
        "m8g", "m6a", "m6i", "m6id", "m6idn", "m6in", "m7a", "m7g", "m7gd", "m7i", "m7i-flex",
        # compute optimized
        "c8g", "c6a", "c6gd", "c6gn", "c6i", "c6id", "c6in", "c7a", "c7g", "c7gd", "c7gn", "c7i",
        # memory optimized
        "r8g", "r6a", "r6i", "r6id", "r6idn", "r6in", "r7a", "r7g", "r7gd", "r7i", "r7iz",
        "x8g", "x2idn", "x2iedn", "x2iezn",
        # storage optimized
        "i4g", "i4i", "im4gn", "is4gen",
        # accelerated computing
        "inf2", "p5", "trn1", "trn1n",
        # high-performance computing
        "hpc6a", "hpc6id", "hpc7a", "hpc7g",
    }
)

DEFAULT_SESSION_MAP = "/var/lib/appliance/sessions.json"
SESSION_MAP_ENV = "APPLIANCE_SESSION_MAP"
SESSION_MAP_SCHEMA_VERSION = 1
