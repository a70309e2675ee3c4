"""eBPF front end: socket syscalls and TLS library calls traced on the node.

Stages, each in its own module:
  bpf/collector.bpf.c  kernel programs (CO-RE), records in bpf/collector.h
  libbpf.py            typed ctypes layer over libbpf.so.1
  preflight.py         environment checks, one line per problem
  tlslibs.py           TLS library discovery (/proc/*/maps) and uprobe attachment
  collector.py         load/configure/attach, pid filters, ring readers, kernel stats
  events.py            typed records decoded from the ring buffers
  streams.py           records -> per-connection stream events (data/gap/eof)
  k8s.py               pod metadata for traced processes
See appliance/ebpf/HANDOFF.md.
"""
