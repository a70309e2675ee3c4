/* SPDX-License-Identifier: Apache-2.0
 *
 * The few kernel types the collector reads, declared by hand instead of a generated
 * vmlinux.h (about 3 MB, tied to one kernel build). Every struct carries
 * preserve_access_index, so clang records each field access as a CO-RE relocation and
 * libbpf rewrites it at load time against the running kernel's BTF
 * (/sys/kernel/btf/vmlinux): only field *names* must match, not offsets or the full
 * layout. Anonymous unions/structs in the kernel (sock_common's address pairs) are
 * matched through: libbpf searches anonymous members of the target type.
 *
 * Types that are user-space ABI (iovec, user_msghdr) or tracepoint contexts whose
 * layout is fixed (syscall tracepoints) are declared *without* preserve_access_index.
 */
#ifndef VMLINUX_MIN_H
#define VMLINUX_MIN_H
/* tells bpf_tracing.h to use the kernel's pt_regs field names (di, si, ax...) */
#define __VMLINUX_H__

typedef unsigned char __u8;
typedef signed char __s8;
typedef unsigned short __u16;
typedef short __s16;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
enum { false = 0, true = 1 };

/* bpf_helper_defs.h needs these names to exist */
enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PROG_ARRAY = 3,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_ARRAY_OF_MAPS = 12,
	BPF_MAP_TYPE_RINGBUF = 27,
};
enum { BPF_ANY = 0, BPF_NOEXIST = 1, BPF_EXIST = 2 };
enum { BPF_F_NO_PREALLOC = 1 };
struct bpf_map;
struct __sk_buff;
struct xdp_md;
struct sk_reuseport_md;
struct bpf_sock;
struct bpf_sock_tuple;
struct bpf_tcp_sock;
struct bpf_sock_ops;
struct sk_msg_md;
struct bpf_perf_event_value;
struct bpf_pidns_info;
struct bpf_redir_neigh;
struct bpf_fib_lookup;
struct bpf_spin_lock;
struct bpf_sysctl;
struct sk_buff;
struct linux_binprm;
struct btf_ptr;
struct inode;
struct socket;
struct file;
struct task_struct;
struct path;
struct seq_file;
struct tcp6_sock;
struct tcp_sock;
struct tcp_timewait_sock;
struct tcp_request_sock;
struct udp6_sock;
struct unix_sock;
struct mptcp_sock;
struct bpf_dynptr;
struct bpf_timer;
struct bpf_list_head;
struct bpf_list_node;
struct bpf_rb_root;
struct bpf_rb_node;
struct cgroup;
struct user_namespace;
struct ipv6hdr;
struct tcphdr;
struct iphdr;
struct xfrm_state;
struct __sk_msg;

/* x86-64 register frame, for PT_REGS_* in bpf_tracing.h (uprobes) */
struct pt_regs {
	unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8;
	unsigned long ax, cx, dx, si, di, orig_ax, ip, cs, flags, sp, ss;
};

/* ---- CO-RE types: only the fields we read ---- */

struct in6_addr {
	__u8 s6_addr[16];
} __attribute__((preserve_access_index));

struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));

struct net {
	struct ns_common ns;
} __attribute__((preserve_access_index));

typedef struct {
	struct net *net;
} __attribute__((preserve_access_index)) possible_net_t;

struct sock_common {
	possible_net_t skc_net;
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
	__u16 sk_type;
	__u16 sk_protocol;
} __attribute__((preserve_access_index));

struct socket {
	struct sock *sk;
} __attribute__((preserve_access_index));

struct inode {
	unsigned short i_mode;
} __attribute__((preserve_access_index));

struct file {
	struct inode *f_inode;
	void *private_data;
} __attribute__((preserve_access_index));

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
} __attribute__((preserve_access_index));

struct files_struct {
	struct fdtable *fdt;
} __attribute__((preserve_access_index));

struct task_struct {
	struct files_struct *files;
} __attribute__((preserve_access_index));

/* sched_process_fork's comm fields became __data_loc in 6.x, which moved child_pid:
 * read it through CO-RE against the kernel's own event struct. */
struct trace_event_raw_sched_process_fork {
	int parent_pid;
	int child_pid;
} __attribute__((preserve_access_index));

/* ---- fixed layouts (no relocation) ---- */

/* syscalls:sys_enter_* / sys_exit_*: 8 bytes of common fields, the syscall number
 * widened to 8 bytes, then every argument (or the return value) as 8 bytes. */
struct syscall_enter_ctx {
	__u64 common;
	__s64 nr;
	__u64 args[6];
};

struct syscall_exit_ctx {
	__u64 common;
	__s64 nr;
	__s64 ret;
};

struct iovec {
	void *iov_base;
	__u64 iov_len;
};

struct user_msghdr {
	void *msg_name;
	int msg_namelen;
	struct iovec *msg_iov;
	__u64 msg_iovlen;
	void *msg_control;
	__u64 msg_controllen;
	unsigned int msg_flags;
};

#endif
