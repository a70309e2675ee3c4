"""The capture modes of `appliance run` (APPLIANCE_MODE, or Akto's AKTO_INFRA_MIRRORING_MODE).

A new mode is one entry here (settings validation, `run --mode` and its help follow) plus its
capture source in the runtime.
"""

MODES: dict[str, str] = {
    "aws": "VXLAN (and GENEVE) from AWS VPC Traffic Mirroring on UDP",
    "gcp": "every port of a NIC (GCP Packet Mirroring, or any host or sidecar)",
    "ebpf": "socket and TLS library calls of this node's processes, traced with eBPF "
            "(a Kubernetes DaemonSet; plaintext of TLS)",
}
