// SPDX-License-Identifier: GPL-2.0
// Weir's kernel path, attached to Weir's parent cgroup (inherited by every workload cgroup):
//   cgroup/connect4, cgroup/connect6  L4 policy before the connection exists (deny by
//                                     destination CIDR/port, concurrent-connection limit) and
//                                     capture of mesh-service destinations to the node.
//   sockops                           per-connection L4 telemetry (RTT, retransmits, bytes,
//                                     state), connection counting, and the original destination
//                                     of captured sockets keyed by their source address.
// All maps are pinned by name, so policy survives a Weir restart.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define TCP_CLOSE 7

char LICENSE[] SEC("license") = "GPL";

/* Workload of a cgroup: set by Weir for each workload cgroup it manages. */
struct workload {
    __u32 id;
    __u32 max_conns;    /* 0 = unlimited */
    __u32 flags;        /* WL_COUNT_HTTP */
};
#define WL_COUNT_HTTP 1
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1024);
    __type(key, __u64);                 /* cgroup id */
    __type(value, struct workload);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} weir_workloads SEC(".maps");

/* Deny rules: longest-prefix match over (workload, port, address). Port 0 = any port. */
struct deny4_key {
    __u32 prefixlen;                    /* 64 + address bits */
    __u32 workload;
    __u16 port;                         /* network order */
    __u16 pad;
    __u32 addr;                         /* network order */
};
struct deny6_key {
    __u32 prefixlen;
    __u32 workload;
    __u16 port;
    __u16 pad;
    __u32 addr[4];
};
struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __uint(max_entries, 4096);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, struct deny4_key);
    __type(value, __u32);               /* rule index, for logs */
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} weir_deny4 SEC(".maps");
struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __uint(max_entries, 4096);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, struct deny6_key);
    __type(value, __u32);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} weir_deny6 SEC(".maps");

/* Mesh services whose connections are captured: destination -> route index. */
struct svc_key {
    __u32 addr[4];                      /* v4 in addr[3] with ::ffff: prefix, network order */
    __u16 port;                         /* network order */
    __u16 pad;
};
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, struct svc_key);
    __type(value, __u32);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} weir_services SEC(".maps");

/* Where captured connections go: the node's capture listener (v4 and v6 addresses). */
struct capture_cfg {
    __u32 addr4;                        /* network order; 0 = capture off */
    __u32 addr6[4];
    __u16 port;                         /* network order */
    __u16 pad;
};
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct capture_cfg);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} weir_capture SEC(".maps");

/* What a socket of a workload is: its workload, and the original destination if captured. */
struct sock_info {
    __u32 workload;
    __u32 captured;
    __u32 addr[4];                      /* original destination, svc_key layout */
    __u16 port;
    __u16 counted;                      /* 1 once it holds a slot of the connection limit */
    __u32 flags;                        /* the workload's flags at connect() */
};
/* Socket-local storage: freed with the socket, no hashing on the connect() path. */
struct {
    __uint(type, BPF_MAP_TYPE_SK_STORAGE);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, int);
    __type(value, struct sock_info);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} weir_socks SEC(".maps");

/* Captured sockets by their source address, for the node's capture listener to look up. */
struct src_key {
    __u32 addr[4];                      /* svc_key layout */
    __u32 port;                         /* host order */
};
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 65536);
    __type(key, struct src_key);
    __type(value, struct sock_info);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} weir_orig_dst SEC(".maps");

/* Open connections per workload (the limit's counter). */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1024);
    __type(key, __u32);
    __type(value, __s64);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} weir_conns SEC(".maps");

/* Sockets of workloads that count HTTP requests in the kernel (sk_msg runs on their sends). */
struct {
    __uint(type, BPF_MAP_TYPE_SOCKHASH);
    __uint(max_entries, 65536);
    __type(key, __u64);                 /* socket cookie */
    __type(value, __u32);               /* the socket (an fd from userspace) */
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} weir_http_socks SEC(".maps");

/* Kernel-counted HTTP/1.x requests: (workload, method) -> count. */
struct http_key {
    __u32 workload;
    __u32 method;                       /* enum method */
};
enum method { M_GET = 0, M_POST, M_PUT, M_HEAD, M_DELETE, M_PATCH, M_OPTIONS, M_OTHER };
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 8192);
    __type(key, struct http_key);
    __type(value, __u64);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} weir_http_requests SEC(".maps");

/* Per-connection L4 facts. */
struct conn_key {
    __u32 laddr[4];
    __u32 raddr[4];
    __u32 lport;                        /* host order */
    __u32 rport;                        /* host order */
};
struct conn_stats {
    __u32 peer[4];                      /* original destination if captured, else remote */
    __u32 peer_port;                    /* host order */
    __u32 captured;
    __u64 cookie;
    __u64 established_ns;
    __u64 closed_ns;
    __u64 bytes_received;
    __u64 bytes_acked;
    __u32 workload;
    __u32 srtt_us;
    __u32 min_srtt_us;
    __u32 max_srtt_us;
    __u32 total_retrans;
    __u32 state;
};
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 65536);
    __type(key, struct conn_key);
    __type(value, struct conn_stats);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} weir_conn_stats SEC(".maps");

/* Counters, indexed by enum counter. */
enum counter { DENIED = 0, LIMITED = 1, CAPTURED = 2, SOCKS_FULL = 3, NCOUNTERS = 8 };
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, NCOUNTERS);
    __type(key, __u32);
    __type(value, __u64);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} weir_counters SEC(".maps");

static __always_inline void bump(__u32 idx)
{
    __u64 *v = bpf_map_lookup_elem(&weir_counters, &idx);
    if (v)
        *v += 1;
}

static __always_inline int denied4(__u32 wl, __u32 addr, __u16 port)
{
    struct deny4_key k = { .prefixlen = 96, .workload = wl, .port = port, .addr = addr };
    if (bpf_map_lookup_elem(&weir_deny4, &k))
        return 1;
    k.port = 0;
    return bpf_map_lookup_elem(&weir_deny4, &k) != 0;
}

static __always_inline int denied6(__u32 wl, const __u32 *addr, __u16 port)
{
    struct deny6_key k = { .prefixlen = 192, .workload = wl, .port = port };
    k.addr[0] = addr[0];
    k.addr[1] = addr[1];
    k.addr[2] = addr[2];
    k.addr[3] = addr[3];
    if (bpf_map_lookup_elem(&weir_deny6, &k))
        return 1;
    k.port = 0;
    return bpf_map_lookup_elem(&weir_deny6, &k) != 0;
}

static __always_inline int over_limit(const struct workload *wl)
{
    if (!wl->max_conns)
        return 0;
    __u32 id = wl->id;
    __s64 *n = bpf_map_lookup_elem(&weir_conns, &id);
    return n && *n >= (__s64)wl->max_conns;
}

/* Shared tail of connect4/connect6: record the socket, capture if the destination is a mesh
 * service. `v4` says the destination is IPv4 (addr[3]), on either socket family; `prog4` is a
 * constant saying which program inlines this (the verifier refuses user_ip6 in connect4).
 * Returns the connect verdict: 1 to go ahead, 0 to refuse. */
static __always_inline int record(struct bpf_sock_addr *ctx, const struct workload *wl, __u32 *addr, __u16 port, int v4, const int prog4)
{
    struct sock_info info = { .workload = wl->id, .flags = wl->flags };
    if (ctx->type == SOCK_STREAM) {
        struct svc_key sk = { .port = port };
        sk.addr[0] = addr[0];
        sk.addr[1] = addr[1];
        sk.addr[2] = addr[2];
        sk.addr[3] = addr[3];
        __u32 zero = 0;
        struct capture_cfg *cap = bpf_map_lookup_elem(&weir_capture, &zero);
        if (cap && cap->port && bpf_map_lookup_elem(&weir_services, &sk)) {
            info.captured = 1;
            info.addr[0] = addr[0];
            info.addr[1] = addr[1];
            info.addr[2] = addr[2];
            info.addr[3] = addr[3];
            info.port = port;
            if (prog4) {
                ctx->user_ip4 = cap->addr4;
            } else if (v4) {
                ctx->user_ip6[0] = 0;
                ctx->user_ip6[1] = 0;
                ctx->user_ip6[2] = bpf_htonl(0x0000ffff);
                ctx->user_ip6[3] = cap->addr4;
            } else {
                ctx->user_ip6[0] = cap->addr6[0];
                ctx->user_ip6[1] = cap->addr6[1];
                ctx->user_ip6[2] = cap->addr6[2];
                ctx->user_ip6[3] = cap->addr6[3];
            }
            ctx->user_port = cap->port;
            bump(CAPTURED);
        }
    }
    struct bpf_sock *sk = ctx->sk;
    struct sock_info *stored = sk ? bpf_sk_storage_get(&weir_socks, sk, 0, BPF_SK_STORAGE_GET_F_CREATE) : 0;
    if (!stored) {
        /* Without its entry the socket escapes the limit and loses its original destination:
         * fail closed rather than let it through unaccounted. */
        bump(SOCKS_FULL);
        return 0;
    }
    *stored = info;
    return 1;
}

SEC("cgroup/connect4")
int weir_connect4(struct bpf_sock_addr *ctx)
{
    __u64 cg = bpf_get_current_cgroup_id();
    struct workload *wl = bpf_map_lookup_elem(&weir_workloads, &cg);
    if (!wl)
        return 1;
    __u32 addr[4] = { 0, 0, bpf_htonl(0x0000ffff), ctx->user_ip4 };
    __u16 port = (__u16)ctx->user_port;
    if (denied4(wl->id, addr[3], port)) {
        bump(DENIED);
        return 0;
    }
    if (ctx->type == SOCK_STREAM && over_limit(wl)) {
        bump(LIMITED);
        return 0;
    }
    return record(ctx, wl, addr, port, 1, 1);
}

SEC("cgroup/connect6")
int weir_connect6(struct bpf_sock_addr *ctx)
{
    __u64 cg = bpf_get_current_cgroup_id();
    struct workload *wl = bpf_map_lookup_elem(&weir_workloads, &cg);
    if (!wl)
        return 1;
    __u32 addr[4] = { ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3] };
    __u16 port = (__u16)ctx->user_port;
    /* ::ffff:a.b.c.d on an AF_INET6 socket never reaches connect4: treat it as IPv4 here. */
    int v4 = addr[0] == 0 && addr[1] == 0 && addr[2] == bpf_htonl(0x0000ffff);
    if (v4 ? denied4(wl->id, addr[3], port) : denied6(wl->id, addr, port)) {
        bump(DENIED);
        return 0;
    }
    if (ctx->type == SOCK_STREAM && over_limit(wl)) {
        bump(LIMITED);
        return 0;
    }
    return record(ctx, wl, addr, port, v4, 0);
}

/* Every ctx field is read once, up front and unconditionally: letting clang share address
 * arithmetic between the v4 and v6 branches produces "modified ctx ptr" loads the verifier
 * refuses. */
static __always_inline void conn_key_of(struct bpf_sock_ops *s, struct conn_key *k)
{
    __u32 family = s->family;
    __u32 lport = s->local_port;
    __u32 rport = bpf_ntohl(s->remote_port);
    __u32 l4 = s->local_ip4, r4 = s->remote_ip4;
    __u32 l6_0 = s->local_ip6[0], l6_1 = s->local_ip6[1], l6_2 = s->local_ip6[2], l6_3 = s->local_ip6[3];
    __u32 r6_0 = s->remote_ip6[0], r6_1 = s->remote_ip6[1], r6_2 = s->remote_ip6[2], r6_3 = s->remote_ip6[3];
    if (rport > 0xffff)                 /* older kernels keep the port in the upper half */
        rport >>= 16;
    k->lport = lport;
    k->rport = rport;
    if (family == AF_INET) {
        k->laddr[2] = bpf_htonl(0x0000ffff);
        k->laddr[3] = l4;
        k->raddr[2] = bpf_htonl(0x0000ffff);
        k->raddr[3] = r4;
    } else {
        k->laddr[0] = l6_0;
        k->laddr[1] = l6_1;
        k->laddr[2] = l6_2;
        k->laddr[3] = l6_3;
        k->raddr[0] = r6_0;
        k->raddr[1] = r6_1;
        k->raddr[2] = r6_2;
        k->raddr[3] = r6_3;
    }
}

static __always_inline void snapshot(struct bpf_sock_ops *s, struct conn_stats *st)
{
    __u32 srtt = s->srtt_us >> 3;
    st->srtt_us = srtt;
    if (srtt) {
        if (!st->min_srtt_us || srtt < st->min_srtt_us)
            st->min_srtt_us = srtt;
        if (srtt > st->max_srtt_us)
            st->max_srtt_us = srtt;
    }
    st->total_retrans = s->total_retrans;
    st->bytes_received = s->bytes_received;
    st->bytes_acked = s->bytes_acked;
}

static __always_inline void add_conn(__u32 wl, __s64 delta)
{
    __s64 *n = bpf_map_lookup_elem(&weir_conns, &wl);
    if (n) {
        __sync_fetch_and_add(n, delta);
    } else if (delta > 0) {
        bpf_map_update_elem(&weir_conns, &wl, &delta, BPF_NOEXIST);
    }
}

SEC("sockops")
int weir_sockops(struct bpf_sock_ops *skops)
{
    if (skops->family != AF_INET && skops->family != AF_INET6)
        return 1;
    __u64 cookie = bpf_get_socket_cookie(skops);
    struct conn_key k = {};
    struct conn_stats *st;
    struct sock_info *info;

    switch (skops->op) {
    case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
    case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB: {
        struct conn_stats init = { .cookie = cookie, .established_ns = bpf_ktime_get_ns(), .state = 1 };
        bpf_sock_ops_cb_flags_set(skops, BPF_SOCK_OPS_RTT_CB_FLAG | BPF_SOCK_OPS_STATE_CB_FLAG | BPF_SOCK_OPS_RETRANS_CB_FLAG);
        conn_key_of(skops, &k);
        init.peer[0] = k.raddr[0];
        init.peer[1] = k.raddr[1];
        init.peer[2] = k.raddr[2];
        init.peer[3] = k.raddr[3];
        init.peer_port = k.rport;
        info = skops->sk ? bpf_sk_storage_get(&weir_socks, skops->sk, 0, 0) : 0;
        if (info) {
            init.workload = info->workload;
            if (info->captured) {
                init.captured = 1;
                init.peer[0] = info->addr[0];
                init.peer[1] = info->addr[1];
                init.peer[2] = info->addr[2];
                init.peer[3] = info->addr[3];
                init.peer_port = bpf_ntohs(info->port);
            }
            if (!info->counted) {
                info->counted = 1;
                add_conn(info->workload, 1);
            }
            if (info->flags & WL_COUNT_HTTP)
                bpf_sock_hash_update(skops, &weir_http_socks, &cookie, BPF_ANY);
            if (info->captured) {
                struct src_key src = { .port = k.lport };
                src.addr[0] = k.laddr[0];
                src.addr[1] = k.laddr[1];
                src.addr[2] = k.laddr[2];
                src.addr[3] = k.laddr[3];
                bpf_map_update_elem(&weir_orig_dst, &src, info, BPF_ANY);
            }
        }
        snapshot(skops, &init);
        bpf_map_update_elem(&weir_conn_stats, &k, &init, BPF_ANY);
        break;
    }
    case BPF_SOCK_OPS_RTT_CB:
    case BPF_SOCK_OPS_RETRANS_CB:
        conn_key_of(skops, &k);
        st = bpf_map_lookup_elem(&weir_conn_stats, &k);
        if (st)
            snapshot(skops, st);
        break;
    case BPF_SOCK_OPS_STATE_CB:
        conn_key_of(skops, &k);
        st = bpf_map_lookup_elem(&weir_conn_stats, &k);
        if (st) {
            snapshot(skops, st);
            st->state = skops->args[1];
            if (skops->args[1] == TCP_CLOSE)
                st->closed_ns = bpf_ktime_get_ns();
        }
        if (skops->args[1] == TCP_CLOSE) {
            info = skops->sk ? bpf_sk_storage_get(&weir_socks, skops->sk, 0, 0) : 0;
            if (info && info->counted) {
                add_conn(info->workload, -1);
                info->counted = 0;
            }
        }
        break;
    }
    return 1;
}

/* The method of a message that starts with an HTTP/1.x request line, else -1. Only the
 * start of each sendmsg() is looked at: a client that pipelines several requests in one
 * send is counted once for them. */
static __always_inline int method_of(const unsigned char *p)
{
    if (p[0] == 'G' && p[1] == 'E' && p[2] == 'T' && p[3] == ' ')
        return M_GET;
    if (p[0] == 'P' && p[1] == 'O' && p[2] == 'S' && p[3] == 'T' && p[4] == ' ')
        return M_POST;
    if (p[0] == 'P' && p[1] == 'U' && p[2] == 'T' && p[3] == ' ')
        return M_PUT;
    if (p[0] == 'H' && p[1] == 'E' && p[2] == 'A' && p[3] == 'D' && p[4] == ' ')
        return M_HEAD;
    if (p[0] == 'D' && p[1] == 'E' && p[2] == 'L' && p[3] == 'E' && p[4] == 'T' && p[5] == 'E' && p[6] == ' ')
        return M_DELETE;
    if (p[0] == 'P' && p[1] == 'A' && p[2] == 'T' && p[3] == 'C' && p[4] == 'H' && p[5] == ' ')
        return M_PATCH;
    if (p[0] == 'O' && p[1] == 'P' && p[2] == 'T' && p[3] == 'I' && p[4] == 'O' && p[5] == 'N' && p[6] == 'S')
        return M_OPTIONS;
    return -1;
}

SEC("sk_msg")
int weir_http_count(struct sk_msg_md *msg)
{
    struct bpf_sock *sk = msg->sk;
    if (!sk)
        return SK_PASS;
    struct sock_info *info = bpf_sk_storage_get(&weir_socks, sk, 0, 0);
    if (!info)
        return SK_PASS;
    if (bpf_msg_pull_data(msg, 0, 8, 0))
        return SK_PASS;
    unsigned char *p = msg->data;
    if (p + 8 > (unsigned char *)msg->data_end)
        return SK_PASS;
    int m = method_of(p);
    if (m < 0)
        return SK_PASS;
    struct http_key k = { .workload = info->workload, .method = m };
    __u64 one = 1, *n = bpf_map_lookup_elem(&weir_http_requests, &k);
    if (n)
        __sync_fetch_and_add(n, 1);
    else
        bpf_map_update_elem(&weir_http_requests, &k, &one, BPF_NOEXIST);
    return SK_PASS;
}
