// SPDX-License-Identifier: Apache-2.0
/*
 * The eBPF collector's kernel side: socket syscalls and TLS library calls become
 * per-connection byte-stream records on ring buffers (one per worker).
 *
 * CO-RE: compiled once with clang against vmlinux_min.h; libbpf relocates every kernel
 * field access against /sys/kernel/btf/vmlinux at load time (no kernel headers).
 * Attach points are syscall tracepoints, sched tracepoints and uprobes only (no
 * kprobes/fentry: they are not available on every node, see DESIGN.md).
 *
 * A connection is (tgid, fd, conn_id): conn_id is the ktime when the collector first
 * saw that fd holding that socket (a new generation whenever the fd number is reused).
 * Offsets are counted here, per direction, over every byte the syscall or TLS call
 * transferred, captured or not: user space sees a loss (full ring, per-call cap) as a
 * jump in offsets or an explicit EV_TRUNC, never as silently joined bytes.
 */
#include "vmlinux_min.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "collector.h"

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define IPPROTO_TCP 6
#define S_IFMT 00170000
#define S_IFSOCK 0140000

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const volatile struct collector_cfg cfg SEC(".rodata.cfg") = {
	.self_tgid = 0,
	.n_rings = 1,
	.max_call_bytes = MAX_CHUNKS * CHUNK_SIZE,
	.filter_on = 0,
	.capture_plain = 1,
	.notify_exec = 0,
};

/* ------------------------------------------------------------------ maps */

struct conn_key {
	__u32 tgid;
	__s32 fd;
};

struct conn_state {
	__u64 sk;
	__u64 conn_id;
	__u64 off[2];
	__u32 ring;
	__u8 role;
	__u8 flags;
	__u8 open_sent;
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct conn_key);
	__type(value, struct conn_state);
} conns SEC(".maps");

enum { K_BUF = 0, K_IOV = 1, K_MSG = 2, K_NOBUF = 3, K_CONNECT = 4 };

struct active_call {
	__u64 buf;      /* user buffer, or iovec array */
	__u64 iovcnt;
	__u64 sk;
	__s32 fd;
	__u8 kind;
	__u8 dir;
	__u8 in_ssl;    /* nested in a TLS library call: ciphertext, link only */
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);            /* pid_tgid: one syscall in flight per thread */
	__type(value, struct active_call);
} active SEC(".maps");

struct ssl_call {
	__u64 ssl;
	__u64 buf;
	__u64 outlen;   /* _ex variants: size_t *readbytes / *written */
	__s32 fd;       /* socket of the first nested syscall, -1 until seen */
	__u8 dir;
	__u8 ex;
	__u8 depth;     /* nested TLS calls on the same thread (one library calling another) */
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct ssl_call);
} ssl_calls SEC(".maps");

struct ssl_key {
	__u32 tgid;
	__u32 pad;
	__u64 ssl;
};

/* SSL object -> socket fd, learnt from the syscalls made inside SSL_read/SSL_write: a
 * later call served from the library's buffer (no syscall) still finds its socket. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ssl_key);
	__type(value, __s32);
} ssl_fd SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u8);
} allow_tgid SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u8);
} allow_cgroup SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} deny_tgid SEC(".maps");

struct ring_inner {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, MAX_RINGS);
	__type(key, __u32);
	__array(values, struct ring_inner);
} rings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 16);
} ctl_ring SEC(".maps");

/* The record being filled: twice the chunk size, so that the verifier can bound a copy of
 * up to CHUNK_SIZE bytes at any fill below CHUNK_SIZE; at most CHUNK_SIZE are sent. Over
 * the 32 KiB a per-CPU map value may hold, hence an array indexed by the CPU (a program
 * and the tail calls it chains run on one CPU); user space sizes it to the CPUs. */
struct ev_scratch {
	struct ev_hdr h;
	__u8 data[CHUNK_SIZE * 2];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ev_scratch);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ST_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* ------------------------------------------------------------------ helpers */

static __always_inline void stat_add(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);
	if (v)
		*v += n;
}

static __always_inline bool traced(__u32 tgid)
{
	if (tgid == cfg.self_tgid)
		return false;
	if (bpf_map_lookup_elem(&deny_tgid, &tgid))
		return false;
	if (!cfg.filter_on)
		return true;
	if (bpf_map_lookup_elem(&allow_tgid, &tgid))
		return true;
	__u64 cg = bpf_get_current_cgroup_id();
	return bpf_map_lookup_elem(&allow_cgroup, &cg) != NULL;
}

/* fd of the current task -> its TCP socket (IPv4/IPv6), or NULL for anything else:
 * files, pipes, UNIX and UDP sockets are dropped here, at syscall entry. */
static __always_inline struct sock *fd_sock(__s32 fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds;
	struct file *file = NULL;

	if (fd < 0 || !fdt || (__u32)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file)
		return NULL;
	unsigned short mode = BPF_CORE_READ(file, f_inode, i_mode);
	if ((mode & S_IFMT) != S_IFSOCK)
		return NULL;
	struct socket *sock = BPF_CORE_READ(file, private_data);
	struct sock *sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return NULL;
	unsigned short family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return NULL;
	if (BPF_CORE_READ(sk, sk_type) != SOCK_STREAM || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return NULL;
	return sk;
}

static __always_inline void read_tuple(struct sock *sk, struct ev_open *o)
{
	o->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	o->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	o->rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (o->family == AF_INET) {
		__u32 l = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__u32 r = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		__builtin_memcpy(o->laddr, &l, 4);
		__builtin_memcpy(o->raddr, &r, 4);
	} else {
		BPF_CORE_READ_INTO(&o->laddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&o->raddr, sk, __sk_common.skc_v6_daddr);
	}
}

/* The socket's network namespace (its inode number, as in /proc/PID/ns/net). */
static __always_inline __u32 netns_of(struct sock *sk)
{
	return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

/* 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104: the same loopback address exists in every
 * network namespace, so it names an endpoint only together with the namespace. */
static __always_inline bool is_loopback(__u16 family, __u8 *a)
{
	__u32 w[4];

	__builtin_memcpy(w, a, 16);
	if (family == AF_INET)
		return a[0] == 127;
	if (w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0xffff))
		return a[12] == 127;
	return w[0] == 0 && w[1] == 0 && w[2] == 0 && w[3] == bpf_htonl(1);
}

/* The worker ring of a connection. When the role is known, a hash of the *client's*
 * endpoint (address, port, and the namespace for a loopback address): the client's and
 * the server's views of one connection between two processes of this node land in the
 * same worker even when a service address was translated on the way (kube-proxy DNAT
 * changes the server's address and port, never the client's), and the worker keeps the
 * server-side view. A connection first seen mid-way (role unknown) hashes its 4-tuple
 * symmetrically. An IPv4-mapped IPv6 address hashes like its IPv4 form. */
static __always_inline __u32 ring_of(struct ev_open *o, __u8 role, __u32 netns)
{
	__u32 n = cfg.n_rings;
	__u32 h, w[4], v[4];
	__u8 *ca;
	__u16 cport;
	bool v4;

	if (n <= 1)
		return 0;
	__builtin_memcpy(w, o->laddr, 16);
	__builtin_memcpy(v, o->raddr, 16);
	v4 = o->family == AF_INET;
	if (role == ROLE_UNKNOWN) {
		h = o->lport ^ o->rport;
		if (v4)
			h ^= w[0] ^ v[0];
		else
			h ^= w[0] ^ w[1] ^ w[2] ^ w[3] ^ v[0] ^ v[1] ^ v[2] ^ v[3];
	} else {
		bool client_local = role == ROLE_CLIENT;
		ca = client_local ? o->laddr : o->raddr;
		cport = client_local ? o->lport : o->rport;
		h = cport;
		if (v4)
			h ^= client_local ? w[0] : v[0];
		else if (client_local)
			h ^= w[0] ^ w[1] ^ w[2] ^ w[3];
		else
			h ^= v[0] ^ v[1] ^ v[2] ^ v[3];
		if (is_loopback(o->family, ca))
			h ^= netns;
	}
	h *= 0x9E3779B1u;
	return (h >> 8) % n;
}

static __always_inline void fill_hdr(struct ev_hdr *h, __u8 type, struct conn_key *k,
				     struct conn_state *c)
{
	h->type = type;
	h->dir = 0;
	h->role = c->role;
	h->flags = c->flags & (F_TLS | F_FROM_START);
	h->tgid = k->tgid;
	h->fd = k->fd;
	h->len = 0;
	h->conn_id = c->conn_id;
	h->ts = bpf_ktime_get_ns();
	h->offset = 0;
	h->extra = 0;
	h->cgroup = bpf_get_current_cgroup_id();
}

static __always_inline void emit_open(struct conn_key *k, struct conn_state *c)
{
	struct ev_open o = {};
	__u32 ring = c->ring;
	void *rb = bpf_map_lookup_elem(&rings, &ring);

	if (!rb)
		return;
	fill_hdr(&o.h, EV_OPEN, k, c);
	read_tuple((struct sock *)c->sk, &o);
	o.h.extra = netns_of((struct sock *)c->sk);
	bpf_get_current_comm(o.comm, sizeof(o.comm));
	if (bpf_ringbuf_output(rb, &o, sizeof(o), 0))
		stat_add(ST_RING_LOST, 1);
	else
		c->open_sent = 1;
}

static __always_inline void emit_close(struct conn_key *k, struct conn_state *c)
{
	struct ev_hdr h = {};
	__u32 ring = c->ring;
	void *rb;

	if (!c->open_sent)
		return; /* user space never heard of it */
	rb = bpf_map_lookup_elem(&rings, &ring);
	if (!rb)
		return;
	fill_hdr(&h, EV_CLOSE, k, c);
	h.offset = c->off[DIR_EGRESS];
	h.extra = c->off[DIR_INGRESS];
	if (bpf_ringbuf_output(rb, &h, sizeof(h), 0))
		stat_add(ST_RING_LOST, 1);
}

/* The connection (tgid, fd) now holding socket sk. `fresh`: accept/connect just made
 * it, so any state under that fd is a previous connection. */
static __always_inline struct conn_state *conn_get(struct conn_key *k, __u64 sk, __u8 role,
						   bool fresh)
{
	struct conn_state *c = bpf_map_lookup_elem(&conns, k);
	struct ev_open o = {};

	if (c && c->sk == sk && !fresh) {
		if (!c->open_sent)
			emit_open(k, c);
		return c;
	}
	if (c)
		emit_close(k, c); /* fd reused for another socket without a close we saw */

	struct conn_state n = {};
	n.sk = sk;
	n.conn_id = bpf_ktime_get_ns();
	n.role = role;
	n.flags = fresh ? F_FROM_START : 0;
	read_tuple((struct sock *)sk, &o);
	n.ring = ring_of(&o, role, netns_of((struct sock *)sk));
	if (bpf_map_update_elem(&conns, k, &n, BPF_ANY)) {
		stat_add(ST_CONN_TABLE_FULL, 1);
		return NULL;
	}
	c = bpf_map_lookup_elem(&conns, k);
	if (!c)
		return NULL;
	stat_add(ST_CONNS, 1);
	/* accept/connect: the open record waits for the first byte traced (a connection
	 * that never carries any, like a health check's or a plain one with CAPTURE_ALL
	 * false, costs user space nothing) */
	if (!fresh)
		emit_open(k, c);
	return c;
}

/* The socket turns out to carry TLS (`flag`: F_TLS from a library call, F_CIPHER from a
 * record header): from now on only the library's plaintext is sent. If raw bytes were
 * already sent as plain data (a socket first seen mid-way, or the other direction began
 * before the first record header showed), that stream ends and a new generation starts. */
static __always_inline void mark_encrypted(struct conn_key *k, struct conn_state *c, __u8 flag)
{
	if (c->flags & flag)
		return;
	if (c->flags & F_RAW) {
		emit_close(k, c);
		c->conn_id = bpf_ktime_get_ns();
		c->off[0] = 0;
		c->off[1] = 0;
		c->flags = (c->flags & (F_TLS | F_CIPHER)) | flag;
		c->open_sent = 0;
		emit_open(k, c);
		return;
	}
	c->flags |= flag;
}

static __always_inline void emit_trunc(struct conn_key *k, struct conn_state *c, __u8 dir,
				       __u64 offset, __u64 nbytes, __u8 flags)
{
	struct ev_hdr h = {};
	__u32 ring = c->ring;
	void *rb = bpf_map_lookup_elem(&rings, &ring);

	stat_add(ST_TRUNC_BYTES, nbytes);
	if (!rb)
		return;
	fill_hdr(&h, EV_TRUNC, k, c);
	h.dir = dir;
	h.flags |= flags;
	h.offset = offset;
	h.extra = nbytes;
	if (bpf_ringbuf_output(rb, &h, sizeof(h), 0))
		stat_add(ST_RING_LOST, 1);
}

/* Copying the payload is a job run by a separate program, one chunk per run, chained
 * by tail calls (at most MAX_CHUNKS + MAX_IOV < 33, the kernel's chain limit): the
 * verifier checks one chunk copy from a clean state instead of every path of a loop
 * through every path of the syscall handlers (which exceeds its 1M-instruction budget).
 * If the chain stops early, the remainder is reported as EV_TRUNC. */
struct emit_job {
	struct conn_key k;
	__u64 conn_id;
	__u64 buf;      /* user buffer (K_BUF) or iovec array (K_IOV) */
	__u64 iovcnt;
	__u64 total;    /* bytes the call moved */
	__u64 off;      /* stream offset of the first of them */
	__u64 want;     /* bytes to capture: min(total, per-call cap) */
	__u64 done;     /* captured so far */
	__u64 seg;      /* current user segment */
	__u64 left;     /* bytes left in it */
	__u64 rec_off;  /* stream offset of the record being filled */
	__u32 fill;     /* bytes in it (the scratch record), not sent yet */
	__u32 iov_i;
	__u32 ring;
	__u8 dir;
	__u8 kind;
	__u8 flags;     /* header flags */
	__u8 role;
};


struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct emit_job);
} jobs SEC(".maps");

enum { EMIT_TP = 0, EMIT_UPROBE = 1 };

/* a program array serves one program type: one for tracepoints, one for uprobes */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} emit_tp_progs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} emit_uprobe_progs SEC(".maps");

static __always_inline void chain(void *ctx, __u32 which)
{
	if (which == EMIT_TP)
		bpf_tail_call(ctx, &emit_tp_progs, 0);
	else
		bpf_tail_call(ctx, &emit_uprobe_progs, 0);
}

static __always_inline void job_hdr(struct ev_hdr *h, __u8 type, struct emit_job *j)
{
	h->type = type;
	h->dir = j->dir;
	h->role = j->role;
	h->flags = j->flags;
	h->tgid = j->k.tgid;
	h->fd = j->k.fd;
	h->len = 0;
	h->conn_id = j->conn_id;
	h->ts = bpf_ktime_get_ns();
	h->offset = 0;
	h->extra = 0;
	h->cgroup = bpf_get_current_cgroup_id();
}

/* `total` bytes moved by one call: advance the stream offset, then start the emitter
 * (`which`: the program type of the caller). */
static __always_inline void emit_payload(void *ctx, __u32 which, struct conn_key *k,
					 struct conn_state *c, __u8 dir, __u8 kind, __u64 buf,
					 __u64 iovcnt, __u64 total, __u8 flags)
{
	__u32 zero = 0;
	struct emit_job *j = bpf_map_lookup_elem(&jobs, &zero);
	__u64 off = c->off[dir & 1];
	__u64 want = cfg.max_call_bytes;

	c->off[dir & 1] = off + total;
	if (!j)
		return;
	if (want > MAX_CHUNKS * CHUNK_SIZE)
		want = MAX_CHUNKS * CHUNK_SIZE;
	j->k = *k;
	j->conn_id = c->conn_id;
	j->buf = buf;
	j->iovcnt = iovcnt;
	j->total = total;
	j->off = off;
	j->want = want < total ? want : total;
	j->done = 0;
	j->seg = kind == K_BUF ? buf : 0;
	j->left = kind == K_BUF ? total : 0;
	j->iov_i = 0;
	j->fill = 0;
	j->rec_off = off;
	j->ring = c->ring;
	j->dir = dir;
	j->kind = kind;
	j->flags = (c->flags & (F_TLS | F_FROM_START)) | flags;
	j->role = c->role;
	chain(ctx, which);
	stat_add(ST_RING_LOST, 1); /* emitter missing: the jump in offsets shows the loss */
}

/* Send the record being filled, if any. */
static __always_inline void flush(void *rb, struct ev_scratch *e, struct emit_job *j)
{
	__u32 n = j->fill;

	if (!n)
		return;
	if (n > CHUNK_SIZE)
		n = CHUNK_SIZE; /* never: a record is sent once it holds CHUNK_SIZE */
	job_hdr(&e->h, EV_DATA, j);
	e->h.len = n;
	e->h.offset = j->rec_off;
	if (bpf_ringbuf_output(rb, e, sizeof(e->h) + n, 0))
		stat_add(ST_RING_LOST, 1);
	j->fill = 0;
}

/* One step of a job: move to the next iovec entry if the current one is used up, copy
 * what fits of the current segment into the record being filled; send the record when it
 * is full, when the call's bytes are all in, or when no entry follows. Consecutive iovec
 * entries (a response head and body written by one writev) share records. */
static __always_inline int run_job(void *ctx, __u32 which)
{
	__u32 zero = 0;
	__u32 cpu = bpf_get_smp_processor_id();
	struct emit_job *j = bpf_map_lookup_elem(&jobs, &zero);
	struct ev_scratch *e = bpf_map_lookup_elem(&scratch, &cpu);

	if (!j || !e)
		return 0;
	__u32 ring = j->ring;
	void *rb = bpf_map_lookup_elem(&rings, &ring);
	if (!rb)
		return 0;

	if (j->done < j->want && j->left == 0 && j->kind == K_IOV && j->iov_i < j->iovcnt &&
	    j->iov_i < MAX_IOV) {
		struct iovec v = {};
		if (!bpf_probe_read_user(&v, sizeof(v), (void *)(j->buf + j->iov_i * sizeof(v)))) {
			j->iov_i++;
			j->seg = (__u64)v.iov_base;
			j->left = v.iov_len;
			if (j->left == 0)
				chain(ctx, which); /* empty entry: next one */
		}
	}
	if (j->done < j->want && j->left > 0) {
		__u32 fill = j->fill & (CHUNK_SIZE - 1);
		__u64 n = j->want - j->done;
		if (n > j->left)
			n = j->left;
		if (n > CHUNK_SIZE - fill)
			n = CHUNK_SIZE - fill;
		if (!bpf_probe_read_user(e->data + fill, n & (CHUNK_SIZE * 2 - 1), (void *)j->seg)) {
			if (fill == 0)
				j->rec_off = j->off + j->done;
			j->fill = fill + n;
			j->done += n;
			j->seg += n;
			j->left -= n;
			bool more_iov = j->kind == K_IOV && j->iov_i < j->iovcnt && j->iov_i < MAX_IOV;
			if (j->fill >= CHUNK_SIZE || j->done >= j->want || (j->left == 0 && !more_iov))
				flush(rb, e, j);
			if (j->done < j->want)
				chain(ctx, which);
		}
	}
	/* finished, unreadable memory, iovecs exhausted or chain limit reached */
	flush(rb, e, j);
	if (j->done < j->total) {
		struct ev_hdr h = {};
		if (j->done < j->want)
			stat_add(ST_IOV_SHORT, 1);
		stat_add(ST_TRUNC_BYTES, j->total - j->done);
		job_hdr(&h, EV_TRUNC, j);
		h.offset = j->off + j->done;
		h.extra = j->total - j->done;
		if (bpf_ringbuf_output(rb, &h, sizeof(h), 0))
			stat_add(ST_RING_LOST, 1);
	}
	return 0;
}

SEC("tracepoint")
int emit_tp(void *ctx) { return run_job(ctx, EMIT_TP); }

SEC("uprobe")
int emit_uprobe(void *ctx) { return run_job(ctx, EMIT_UPROBE); }

/* A TLS record header (ChangeCipherSpec, Alert, Handshake, ApplicationData; SSL 3.0 to
 * TLS 1.3) at the first byte a direction carries: the socket is encrypted. */
static __always_inline bool looks_tls(__u8 kind, __u64 buf)
{
	__u8 b[3] = {};
	__u64 p = buf;

	if (kind == K_IOV) {
		struct iovec v = {};
		if (bpf_probe_read_user(&v, sizeof(v), (void *)buf))
			return false;
		if (v.iov_len < 3)
			return false;
		p = (__u64)v.iov_base;
	}
	if (bpf_probe_read_user(b, 3, (void *)p))
		return false;
	return b[0] >= 0x14 && b[0] <= 0x17 && b[1] == 0x03 && b[2] <= 0x04;
}

/* ------------------------------------------------------------------ syscalls */

#define MSG_PEEK 2

static __always_inline int enter_io(struct syscall_enter_ctx *ctx, __u8 kind, __u8 dir,
				    __u64 flags)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	__s32 fd = (__s32)ctx->args[0];

	/* a peek is read again by a later call (nginx peeks at the first byte of https) */
	if (flags & MSG_PEEK)
		return 0;
	if (!traced(tgid))
		return 0;
	struct ssl_call *sc = bpf_map_lookup_elem(&ssl_calls, &id);
	if (!sc && !cfg.capture_plain)
		return 0;
	struct sock *sk = fd_sock(fd);
	if (!sk)
		return 0;

	struct active_call a = {};
	a.fd = fd;
	a.sk = (__u64)sk;
	a.kind = kind;
	a.dir = dir;
	a.buf = ctx->args[1];
	if (kind == K_IOV) {
		a.iovcnt = ctx->args[2];
	} else if (kind == K_MSG) {
		struct user_msghdr m = {};
		if (bpf_probe_read_user(&m, sizeof(m), (void *)ctx->args[1]))
			return 0;
		a.buf = (__u64)m.msg_iov;
		a.iovcnt = m.msg_iovlen;
		a.kind = K_IOV;
	}
	if (sc) {
		a.in_ssl = 1;
		if (sc->fd < 0) {
			struct ssl_key sk_key = {.tgid = tgid, .ssl = sc->ssl};
			sc->fd = fd;
			bpf_map_update_elem(&ssl_fd, &sk_key, &fd, BPF_ANY);
		}
	}
	bpf_map_update_elem(&active, &id, &a, BPF_ANY);
	return 0;
}

static __always_inline int exit_io(struct syscall_exit_ctx *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct active_call *ap = bpf_map_lookup_elem(&active, &id);
	struct active_call a;
	__s64 ret = ctx->ret;

	if (!ap)
		return 0;
	a = *ap;
	bpf_map_delete_elem(&active, &id);
	if (ret <= 0)
		return 0;

	struct conn_key k = {.tgid = id >> 32, .fd = a.fd};
	struct conn_state *c = conn_get(&k, a.sk, ROLE_UNKNOWN, false);
	if (!c)
		return 0;
	if (a.in_ssl) {
		mark_encrypted(&k, c, F_TLS);
		stat_add(ST_CIPHER_BYTES, ret);
		return 0;
	}
	if (c->flags & (F_TLS | F_CIPHER)) {
		stat_add(ST_CIPHER_BYTES, ret);
		return 0;
	}
	if (c->off[a.dir & 1] == 0 && a.kind != K_NOBUF && looks_tls(a.kind, a.buf)) {
		mark_encrypted(&k, c, F_CIPHER);
		stat_add(ST_CIPHER_BYTES, ret);
		return 0;
	}
	c->flags |= F_RAW;
	if (a.kind == K_NOBUF) {
		/* sendfile: the bytes never pass through user memory */
		__u64 off = c->off[a.dir & 1];
		c->off[a.dir & 1] = off + ret;
		emit_trunc(&k, c, a.dir, off, ret, F_SOCK_IO);
		return 0;
	}
	emit_payload(ctx, EMIT_TP, &k, c, a.dir, a.kind, a.buf, a.iovcnt, ret, F_SOCK_IO);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_read")
int enter_read(struct syscall_enter_ctx *ctx) { return enter_io(ctx, K_BUF, DIR_INGRESS, 0); }
SEC("tracepoint/syscalls/sys_exit_read")
int exit_read(struct syscall_exit_ctx *ctx) { return exit_io(ctx); }

SEC("tracepoint/syscalls/sys_enter_write")
int enter_write(struct syscall_enter_ctx *ctx) { return enter_io(ctx, K_BUF, DIR_EGRESS, 0); }
SEC("tracepoint/syscalls/sys_exit_write")
int exit_write(struct syscall_exit_ctx *ctx) { return exit_io(ctx); }

SEC("tracepoint/syscalls/sys_enter_recvfrom")
int enter_recvfrom(struct syscall_enter_ctx *ctx) { return enter_io(ctx, K_BUF, DIR_INGRESS, ctx->args[3]); }
SEC("tracepoint/syscalls/sys_exit_recvfrom")
int exit_recvfrom(struct syscall_exit_ctx *ctx) { return exit_io(ctx); }

SEC("tracepoint/syscalls/sys_enter_sendto")
int enter_sendto(struct syscall_enter_ctx *ctx) { return enter_io(ctx, K_BUF, DIR_EGRESS, 0); }
SEC("tracepoint/syscalls/sys_exit_sendto")
int exit_sendto(struct syscall_exit_ctx *ctx) { return exit_io(ctx); }

SEC("tracepoint/syscalls/sys_enter_readv")
int enter_readv(struct syscall_enter_ctx *ctx) { return enter_io(ctx, K_IOV, DIR_INGRESS, 0); }
SEC("tracepoint/syscalls/sys_exit_readv")
int exit_readv(struct syscall_exit_ctx *ctx) { return exit_io(ctx); }

SEC("tracepoint/syscalls/sys_enter_writev")
int enter_writev(struct syscall_enter_ctx *ctx) { return enter_io(ctx, K_IOV, DIR_EGRESS, 0); }
SEC("tracepoint/syscalls/sys_exit_writev")
int exit_writev(struct syscall_exit_ctx *ctx) { return exit_io(ctx); }

SEC("tracepoint/syscalls/sys_enter_recvmsg")
int enter_recvmsg(struct syscall_enter_ctx *ctx) { return enter_io(ctx, K_MSG, DIR_INGRESS, ctx->args[2]); }
SEC("tracepoint/syscalls/sys_exit_recvmsg")
int exit_recvmsg(struct syscall_exit_ctx *ctx) { return exit_io(ctx); }

SEC("tracepoint/syscalls/sys_enter_sendmsg")
int enter_sendmsg(struct syscall_enter_ctx *ctx) { return enter_io(ctx, K_MSG, DIR_EGRESS, 0); }
SEC("tracepoint/syscalls/sys_exit_sendmsg")
int exit_sendmsg(struct syscall_exit_ctx *ctx) { return exit_io(ctx); }

SEC("tracepoint/syscalls/sys_enter_sendfile64")
int enter_sendfile(struct syscall_enter_ctx *ctx) { return enter_io(ctx, K_NOBUF, DIR_EGRESS, 0); }
SEC("tracepoint/syscalls/sys_exit_sendfile64")
int exit_sendfile(struct syscall_exit_ctx *ctx) { return exit_io(ctx); }

SEC("tracepoint/syscalls/sys_enter_connect")
int enter_connect(struct syscall_enter_ctx *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct active_call a = {};

	if (!traced(id >> 32))
		return 0;
	a.fd = (__s32)ctx->args[0];
	a.kind = K_CONNECT;
	bpf_map_update_elem(&active, &id, &a, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_connect")
int exit_connect(struct syscall_exit_ctx *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct active_call *ap = bpf_map_lookup_elem(&active, &id);
	__s64 ret = ctx->ret;
	__s32 fd;

	if (!ap)
		return 0;
	fd = ap->fd;
	bpf_map_delete_elem(&active, &id);
	if (ret != 0 && ret != -115 /* EINPROGRESS */)
		return 0;
	struct sock *sk = fd_sock(fd);
	if (!sk)
		return 0;
	struct conn_key k = {.tgid = id >> 32, .fd = fd};
	conn_get(&k, (__u64)sk, ROLE_CLIENT, true);
	return 0;
}

static __always_inline int on_accept(struct syscall_exit_ctx *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__s64 ret = ctx->ret;

	if (ret < 0 || !traced(id >> 32))
		return 0;
	struct sock *sk = fd_sock((__s32)ret);
	if (!sk)
		return 0;
	struct conn_key k = {.tgid = id >> 32, .fd = (__s32)ret};
	conn_get(&k, (__u64)sk, ROLE_SERVER, true);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept")
int exit_accept(struct syscall_exit_ctx *ctx) { return on_accept(ctx); }
SEC("tracepoint/syscalls/sys_exit_accept4")
int exit_accept4(struct syscall_exit_ctx *ctx) { return on_accept(ctx); }

SEC("tracepoint/syscalls/sys_enter_close")
int enter_close(struct syscall_enter_ctx *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct conn_key k = {.tgid = id >> 32, .fd = (__s32)ctx->args[0]};
	struct conn_state *c;

	if (!traced(k.tgid))
		return 0;
	c = bpf_map_lookup_elem(&conns, &k);
	if (!c)
		return 0;
	emit_close(&k, c);
	bpf_map_delete_elem(&conns, &k);
	return 0;
}

/* ------------------------------------------------------------------ processes */

SEC("tracepoint/sched/sched_process_fork")
int on_fork(struct trace_event_raw_sched_process_fork *ctx)
{
	__u32 parent = bpf_get_current_pid_tgid() >> 32;
	__u32 child = BPF_CORE_READ(ctx, child_pid);
	__u8 one = 1;

	/* children of an excluded process (the collector's workers) are excluded too */
	if (bpf_map_lookup_elem(&deny_tgid, &parent))
		bpf_map_update_elem(&deny_tgid, &child, &one, BPF_ANY);
	/* a traced process's children are traced (nginx workers of a traced master) */
	if (cfg.filter_on && bpf_map_lookup_elem(&allow_tgid, &parent))
		bpf_map_update_elem(&allow_tgid, &child, &one, BPF_ANY);
	return 0;
}

SEC("tracepoint/sched/sched_process_exit")
int on_exit(void *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id, tgid = id >> 32;
	bool was_traced = traced(tgid);

	/* thread ids inherited through on_fork, and exited processes */
	bpf_map_delete_elem(&allow_tgid, &tid);
	bpf_map_delete_elem(&deny_tgid, &tid);
	if (tid != tgid || !was_traced)
		return 0;

	struct ev_hdr h = {};
	h.type = EV_PROC_EXIT;
	h.tgid = tgid;
	h.fd = -1;
	h.ts = bpf_ktime_get_ns();
	h.cgroup = bpf_get_current_cgroup_id();
	for (__u32 i = 0; i < MAX_RINGS; i++) {
		__u32 r = i;
		if (i >= cfg.n_rings)
			break;
		void *rb = bpf_map_lookup_elem(&rings, &r);
		if (rb && bpf_ringbuf_output(rb, &h, sizeof(h), 0))
			stat_add(ST_RING_LOST, 1);
	}
	return 0;
}

SEC("tracepoint/sched/sched_process_exec")
int on_exec(void *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct ev_open o = {};

	if (!cfg.notify_exec || (id >> 32) == cfg.self_tgid)
		return 0;
	o.h.type = EV_EXEC;
	o.h.tgid = id >> 32;
	o.h.fd = -1;
	o.h.ts = bpf_ktime_get_ns();
	o.h.cgroup = bpf_get_current_cgroup_id();
	bpf_get_current_comm(o.comm, sizeof(o.comm));
	if (bpf_ringbuf_output(&ctl_ring, &o, sizeof(o), 0))
		stat_add(ST_RING_LOST, 1);
	return 0;
}

/* ------------------------------------------------------------------ TLS library calls
 *
 * OpenSSL 1.1.1 and 3.x: SSL_read/SSL_write return the byte count; SSL_read_ex and
 * SSL_write_ex return 1 on success and store the count through their 4th argument.
 * The SSL object is linked to its socket by the syscall the library makes inside the
 * call (enter_io above), never by struct offsets, which change between versions.
 * Another library (BoringSSL, GnuTLS, Go crypto/tls) is another set of entry programs
 * calling ssl_enter with its own argument registers; ssl_exit stays the same.
 */

static __always_inline int ssl_enter(void *ssl, void *buf, __u8 dir, __u8 ex, void *outlen)
{
	__u64 id = bpf_get_current_pid_tgid();

	if (!traced(id >> 32))
		return 0;
	struct ssl_call *cur = bpf_map_lookup_elem(&ssl_calls, &id);
	if (cur) {
		cur->depth++;
		return 0;
	}
	struct ssl_call s = {};
	s.ssl = (__u64)ssl;
	s.buf = (__u64)buf;
	s.outlen = (__u64)outlen;
	s.fd = -1;
	s.dir = dir;
	s.ex = ex;
	bpf_map_update_elem(&ssl_calls, &id, &s, BPF_ANY);
	return 0;
}

static __always_inline int ssl_exit(void *ctx, int ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	struct ssl_call *sp = bpf_map_lookup_elem(&ssl_calls, &id);
	struct ssl_call s;
	__u64 len = 0;

	if (!sp)
		return 0;
	if (sp->depth) {
		sp->depth--;
		return 0;
	}
	s = *sp;
	bpf_map_delete_elem(&ssl_calls, &id);
	if (s.ex) {
		if (ret != 1 || bpf_probe_read_user(&len, sizeof(len), (void *)s.outlen))
			return 0;
	} else {
		if (ret <= 0)
			return 0;
		len = ret;
	}
	if (!len)
		return 0;

	__s32 fd = s.fd;
	if (fd < 0) {
		struct ssl_key key = {.tgid = tgid, .ssl = s.ssl};
		__s32 *p = bpf_map_lookup_elem(&ssl_fd, &key);
		if (!p) {
			stat_add(ST_TLS_UNLINKED, 1);
			return 0;
		}
		fd = *p;
	}
	struct sock *sk = fd_sock(fd);
	if (!sk) {
		stat_add(ST_TLS_UNLINKED, 1);
		return 0;
	}
	struct conn_key k = {.tgid = tgid, .fd = fd};
	struct conn_state *c = conn_get(&k, (__u64)sk, ROLE_UNKNOWN, false);
	if (!c)
		return 0;
	mark_encrypted(&k, c, F_TLS);
	emit_payload(ctx, EMIT_UPROBE, &k, c, s.dir, K_BUF, s.buf, 0, len, F_TLS);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(ssl_write_enter, void *ssl, void *buf, int num)
{
	return ssl_enter(ssl, buf, DIR_EGRESS, 0, NULL);
}

SEC("uprobe")
int BPF_KPROBE(ssl_write_ex_enter, void *ssl, void *buf, __u64 num, void *written)
{
	return ssl_enter(ssl, buf, DIR_EGRESS, 1, written);
}

SEC("uprobe")
int BPF_KPROBE(ssl_read_enter, void *ssl, void *buf, int num)
{
	return ssl_enter(ssl, buf, DIR_INGRESS, 0, NULL);
}

SEC("uprobe")
int BPF_KPROBE(ssl_read_ex_enter, void *ssl, void *buf, __u64 num, void *readbytes)
{
	return ssl_enter(ssl, buf, DIR_INGRESS, 1, readbytes);
}

SEC("uretprobe")
int BPF_KRETPROBE(ssl_return, long ret)
{
	return ssl_exit(ctx, (int)ret);
}
