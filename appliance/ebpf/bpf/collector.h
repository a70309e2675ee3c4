/* SPDX-License-Identifier: Apache-2.0
 *
 * Records the collector's BPF programs write to user space, and its load-time
 * configuration. appliance/ebpf/events.py and appliance/ebpf/loader.py mirror these
 * layouts (tests/ebpf check the sizes against the compiled object's BTF).
 * All records are little-endian, naturally aligned, no implicit padding.
 */
#ifndef COLLECTOR_H
#define COLLECTOR_H

#define CHUNK_SIZE 16384          /* payload bytes per DATA record (power of two) */
#define MAX_CHUNKS 16             /* per syscall or TLS call: 16 x 16 KiB = 256 KiB */
#define MAX_IOV 16                /* iovec entries walked per readv/writev/recvmsg/sendmsg */
#define MAX_RINGS 64              /* worker ring buffers */

enum ev_type {
	EV_OPEN = 1,      /* a connection is first seen: ev_open */
	EV_DATA = 2,      /* payload bytes [offset, offset+len) of one direction */
	EV_TRUNC = 3,     /* bytes [offset, offset+extra) of one direction were not captured */
	EV_CLOSE = 4,     /* close(fd), fd reuse or TLS switch: offset/extra = final offsets (egress/ingress) */
	EV_PROC_EXIT = 5, /* process tgid exited: every connection of it is over */
	EV_EXEC = 6,      /* control ring: tgid called execve (rescan its libraries) */
};

enum ev_dir {
	DIR_EGRESS = 0,   /* bytes the traced process sent (write side) */
	DIR_INGRESS = 1,  /* bytes the traced process received (read side) */
};

enum ev_role {
	ROLE_UNKNOWN = 0, /* first seen at a data call: the socket existed before */
	ROLE_CLIENT = 1,  /* connect() */
	ROLE_SERVER = 2,  /* accept()/accept4() */
};

enum ev_flags {
	F_TLS = 1,        /* plaintext of a TLS library call (the socket's ciphertext is never sent) */
	F_FROM_START = 2, /* accept/connect was seen: offsets start at the stream's first byte */
	F_CIPHER = 4,     /* internal: the socket carries TLS records; raw data is suppressed */
	F_SOCK_IO = 8,    /* DATA: captured at a socket syscall (not a TLS library call) */
	F_RAW = 16,       /* internal: plain (unencrypted) bytes were sent for this generation */
};

enum stat_idx {
	ST_RING_LOST = 0,     /* ring buffer full: a record was not written */
	ST_TLS_UNLINKED,      /* TLS call whose socket could not be found: plaintext dropped */
	ST_CIPHER_BYTES,      /* ciphertext bytes seen on TLS sockets and not sent */
	ST_TRUNC_BYTES,       /* bytes over the per-call cap, reported as EV_TRUNC */
	ST_CONNS,             /* connections opened */
	ST_CONN_TABLE_FULL,   /* connection table update failed */
	ST_IOV_SHORT,         /* iovec walk ended before the transferred length */
	ST_COUNT,
};

struct ev_hdr {           /* 56 bytes */
	__u8 type;
	__u8 dir;
	__u8 role;
	__u8 flags;
	__u32 tgid;
	__s32 fd;
	__u32 len;            /* DATA: payload bytes that follow */
	__u64 conn_id;        /* generation of (tgid, fd): ktime of first sight */
	__u64 ts;             /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) */
	__u64 offset;
	__u64 extra;          /* OPEN: network namespace inode; TRUNC: bytes; CLOSE: ingress offset */
	__u64 cgroup;         /* bpf_get_current_cgroup_id() */
};

struct ev_open {          /* 56 + 56 = 112 bytes */
	struct ev_hdr h;
	__u16 family;         /* 2 = AF_INET, 10 = AF_INET6 */
	__u16 lport;
	__u16 rport;
	__u16 pad;
	__u8 laddr[16];       /* AF_INET: first 4 bytes */
	__u8 raddr[16];
	char comm[16];
};

struct ev_data {
	struct ev_hdr h;
	__u8 data[CHUNK_SIZE];
};

/* Load-time configuration, in its own read-only section so user space sets it as one
 * struct (libbpf map ".rodata.cfg") before load; the verifier then prunes dead code. */
struct collector_cfg {
	__u32 self_tgid;      /* the collector itself: never traced (nor its children) */
	__u32 n_rings;        /* worker ring buffers in use, 1..MAX_RINGS */
	__u32 max_call_bytes; /* per-call capture cap, <= MAX_CHUNKS * CHUNK_SIZE */
	__u8 filter_on;       /* 1: trace only allowed tgids / cgroups */
	__u8 capture_plain;   /* 0: CAPTURE_ALL=false, only TLS library calls */
	__u8 notify_exec;     /* 1: EV_EXEC on the control ring */
	__u8 pad;
};

#endif
