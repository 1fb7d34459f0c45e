// SPDX-License-Identifier: GPL-2.0
/*
 * fasp-proxy's BPF fast path: a TC classifier (direct action) for clsact ingress that forwards
 * the UDP packets of established proxied sessions itself, instead of the kernel's netfilter
 * path (nftables DNAT in prerouting, routing, the forward hook, SNAT in postrouting, with a
 * conntrack entry holding the translation).
 *
 * It stands for these rules of `src/dataplane/nftables/ruleset.rs` (IPv4 shown, IPv6 alike):
 *
 *   prerouting:  fib daddr type local dnat ip to ip saddr . udp sport . udp dport map @sessions
 *   postrouting: ct status dnat meta l4proto udp
 *                snat ip to ct original ip saddr . ct original proto-src . ct original proto-dst
 *                map @source_nat
 *   and conntrack's reverse translation of the replies (un-SNAT, un-DNAT).
 *
 * One program handles both directions of IPv4 and IPv6:
 * - a packet whose source address . source port . destination port is in `fp_forward` (the
 *   key of the `sessions` map) goes to the backend, from the SNAT address and port;
 * - a packet whose backend address . port . SNAT address . port is in `fp_reply` (the reply
 *   tuple conntrack would match) goes back to the client, from the proxy address and port;
 * - anything else leaves unchanged (fall through), and the kernel does what it does without
 *   the fast path: nftables, conntrack, routing, ICMP errors. So does a packet the fast path
 *   holds but cannot forward as the kernel would (TTL expiring, no route, forwarding off,
 *   needs fragmenting).
 *
 * A forwarded packet skips netfilter altogether (prerouting, forward, postrouting), so filter
 * rules an administrator has there do not see the flows this program holds.
 *
 * Built by build.rs: clang -O2 -g -target bpf, with libbpf's headers and the kernel UAPI only.
 */

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/socket.h>
#include <linux/udp.h>
#include <stddef.h>

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

/* The layout the Rust loader (src/dataplane/fast_path/maps.rs) mirrors: it refuses an object
 * whose fp_layout differs from its own. Bump FP_VERSION on any change of the structs below. */
#define FP_MAGIC 0x66617370 /* "fasp" */
#define FP_VERSION 1

/* Address families in keys, as in <sys/socket.h> (AF_INET, AF_INET6). */
#define FP_AF_INET 2
#define FP_AF_INET6 10

/* Default size of each map; the loader may set another before loading. */
#define FP_DEFAULT_ENTRIES 262144

/* Returned for every packet the fast path does not forward. With a TCX link it is TCX_NEXT:
 * the next program on the interface, any tc filter, then the stack see the packet unchanged.
 * (TC_ACT_OK would be TCX_PASS, which skips the programs and filters after this one.) */
#define FALL_THROUGH TC_ACT_UNSPEC

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

/* fp_forward's key: the nftables `sessions` map's key, client address . client UDP source
 * port . proxy UDP port (the packet's destination port). */
struct fp_forward_key {
	__u8 addr[16]; /* client address; IPv4 in the first 4 bytes, the rest zero */
	__be16 sport;  /* client UDP source port */
	__be16 dport;  /* proxy UDP port */
	__u8 family;   /* FP_AF_INET or FP_AF_INET6 */
	__u8 pad[3];   /* zero */
};

/* fp_reply's key: a reply's source and destination, backend address . backend port . SNAT
 * address . SNAT port (the reply tuple of the flow's conntrack entry). */
struct fp_reply_key {
	__u8 saddr[16]; /* backend address */
	__u8 daddr[16]; /* SNAT address */
	__be16 sport;   /* backend port */
	__be16 dport;   /* SNAT port */
	__u8 family;
	__u8 pad[3];
};

/* Both maps' value: what a matching packet becomes, and what was counted. */
struct fp_rewrite {
	__u8 match_daddr[16]; /* the destination address the packet must have (forward: the proxy
			       * address the client sends to; reply: the SNAT address) */
	__u8 saddr[16];       /* new source address (forward: SNAT address; reply: proxy) */
	__u8 daddr[16];       /* new destination address (forward: backend; reply: client) */
	__be16 sport;         /* new source port (forward: SNAT port; reply: proxy port) */
	__be16 dport;         /* new destination port (forward: backend port; reply: client port) */
	__u32 pad;
	__u64 packets; /* packets forwarded (as conntrack's per-direction counters) */
	__u64 bytes;   /* their L3 length (IP header and payload, as conntrack counts) */
};

_Static_assert(sizeof(struct fp_forward_key) == 24, "fp_forward_key is 24 bytes");
_Static_assert(sizeof(struct fp_reply_key) == 40, "fp_reply_key is 40 bytes");
_Static_assert(sizeof(struct fp_rewrite) == 72, "fp_rewrite is 72 bytes");

/* What the loader reads to check it speaks this object's layout. */
struct fp_layout {
	__u32 magic;
	__u32 version;
	__u32 forward_key_size;
	__u32 reply_key_size;
	__u32 rewrite_size;
};

const volatile struct fp_layout fp_layout SEC(".rodata.layout") = {
	.magic = FP_MAGIC,
	.version = FP_VERSION,
	.forward_key_size = sizeof(struct fp_forward_key),
	.reply_key_size = sizeof(struct fp_reply_key),
	.rewrite_size = sizeof(struct fp_rewrite),
};

/* Elements are allocated on insert (BPF_F_NO_PREALLOC): an idle proxy holds no memory for
 * sessions it does not have. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FP_DEFAULT_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fp_forward_key);
	__type(value, struct fp_rewrite);
} fp_forward SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FP_DEFAULT_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fp_reply_key);
	__type(value, struct fp_rewrite);
} fp_reply SEC(".maps");

/* What parsing a packet found: where its headers are and the fields the lookups need. */
struct packet {
	__u8 saddr[16];  /* first: 8-byte aligned on the stack, compared as two __u64 */
	__u8 daddr[16];
	__u32 l3_off;    /* offset of the IP header from the Ethernet header */
	__u32 l4_off;    /* offset of the UDP header */
	__u32 l3_len;    /* IP total length (IPv6: 40 + payload length) */
	__u8 family;
	__u8 ttl;        /* TTL or hop limit */
	__u8 tos;
	__u8 pad;
	__be32 flowinfo; /* IPv6 only */
	__be16 sport;
	__be16 dport;
} __attribute__((aligned(8)));

/* Parses Ethernet, then IPv4 (any header length, not a fragment) or IPv6 (UDP the next header,
 * no extension headers), then UDP. Returns 0 when the packet is one the fast path may handle. */
static __always_inline int parse(struct __sk_buff *skb, struct packet *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct udphdr *udp;

	if ((void *)(eth + 1) > data_end)
		return -1;
	p->l3_off = sizeof(*eth);

	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > data_end)
			return -1;
		if (ip->version != 4 || ip->protocol != IPPROTO_UDP)
			return -1;
		/* Fragments are reassembled by conntrack (nf_defrag) before the DNAT rule sees
		 * them: leave them to it. */
		if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
			return -1;
		/* A header with options falls through (rare on data traffic). Only the constant
		 * 20-byte header keeps every packet offset constant: a variable offset added to a
		 * packet pointer is refused by the verifier unless the loader has CAP_PERFMON, and
		 * the daemon should need only CAP_BPF and CAP_NET_ADMIN. */
		if (ip->ihl != 5)
			return -1;
		p->family = FP_AF_INET;
		p->ttl = ip->ttl;
		p->tos = ip->tos;
		p->l3_len = bpf_ntohs(ip->tot_len);
		__builtin_memset(p->saddr, 0, sizeof(p->saddr));
		__builtin_memset(p->daddr, 0, sizeof(p->daddr));
		__builtin_memcpy(p->saddr, &ip->saddr, 4);
		__builtin_memcpy(p->daddr, &ip->daddr, 4);
		p->l4_off = sizeof(*eth) + sizeof(*ip);
		udp = (void *)(ip + 1);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end)
			return -1;
		/* Extension headers (fragments included) are the kernel's to walk. */
		if (ip6->version != 6 || ip6->nexthdr != IPPROTO_UDP)
			return -1;
		p->family = FP_AF_INET6;
		p->ttl = ip6->hop_limit;
		p->tos = 0;
		p->flowinfo = *(__be32 *)ip6 & bpf_htonl(0x0fffffff);
		p->l3_len = sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
		__builtin_memcpy(p->saddr, &ip6->saddr, 16);
		__builtin_memcpy(p->daddr, &ip6->daddr, 16);
		p->l4_off = sizeof(*eth) + sizeof(*ip6);
		udp = (void *)(ip6 + 1);
	} else {
		return -1;
	}
	if ((void *)(udp + 1) > data_end)
		return -1;
	p->sport = udp->source;
	p->dport = udp->dest;
	return 0;
}

static __always_inline int addr_eq(const __u8 *a, const __u8 *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;

	return x[0] == y[0] && x[1] == y[1];
}

/* Finds the rewrite for the packet: the forward map first (a client's packet to the proxy),
 * then the reply map (a backend's packet to the SNAT address). */
static __always_inline struct fp_rewrite *lookup(const struct packet *p)
{
	struct fp_forward_key fk = {};
	struct fp_reply_key rk = {};
	struct fp_rewrite *rw;

	/* nft: `dnat ip to ip saddr . udp sport . udp dport map @sessions`. */
	__builtin_memcpy(fk.addr, p->saddr, 16);
	fk.sport = p->sport;
	fk.dport = p->dport;
	fk.family = p->family;
	rw = bpf_map_lookup_elem(&fp_forward, &fk);
	if (rw)
		return rw;

	/* conntrack: a reply to the SNAT'ed source is translated back (its reply tuple). */
	__builtin_memcpy(rk.saddr, p->saddr, 16);
	__builtin_memcpy(rk.daddr, p->daddr, 16);
	rk.sport = p->sport;
	rk.dport = p->dport;
	rk.family = p->family;
	return bpf_map_lookup_elem(&fp_reply, &rk);
}

/* Rewrites an IPv4 packet: addresses, ports, TTL, and both checksums, incrementally. */
static __always_inline int rewrite_v4(struct __sk_buff *skb, const struct packet *p,
				      const struct fp_rewrite *rw)
{
	__u32 ip_check = p->l3_off + offsetof(struct iphdr, check);
	__u32 udp_check = p->l4_off + offsetof(struct udphdr, check);
	__be32 old_addrs[2], new_addrs[2];
	__be16 old_ports[2] = {p->sport, p->dport};
	__be16 new_ports[2] = {rw->sport, rw->dport};
	__be16 old_ttl, new_ttl;
	__s64 diff;

	__builtin_memcpy(&old_addrs[0], p->saddr, 4);
	__builtin_memcpy(&old_addrs[1], p->daddr, 4);
	__builtin_memcpy(&new_addrs[0], rw->saddr, 4);
	__builtin_memcpy(&new_addrs[1], rw->daddr, 4);

	/* DNAT + SNAT of the addresses: in the IP header checksum, and in the UDP checksum's
	 * pseudo header (BPF_F_MARK_MANGLED_0: a zero "no checksum" stays zero, a computed 0
	 * becomes 0xffff, as nf_nat's UDP manipulation does). */
	diff = bpf_csum_diff(old_addrs, sizeof(old_addrs), new_addrs, sizeof(new_addrs), 0);
	if (diff < 0)
		return -1;
	if (bpf_l3_csum_replace(skb, ip_check, 0, diff, 0))
		return -1;
	if (bpf_l4_csum_replace(skb, udp_check, 0, diff, BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0))
		return -1;
	if (bpf_skb_store_bytes(skb, p->l3_off + offsetof(struct iphdr, saddr), new_addrs,
				sizeof(new_addrs), 0))
		return -1;

	/* The ports: in the UDP checksum only (they are not in the pseudo header). */
	diff = bpf_csum_diff((__be32 *)old_ports, sizeof(old_ports), (__be32 *)new_ports,
			     sizeof(new_ports), 0);
	if (diff < 0)
		return -1;
	if (bpf_l4_csum_replace(skb, udp_check, 0, diff, BPF_F_MARK_MANGLED_0))
		return -1;
	if (bpf_skb_store_bytes(skb, p->l4_off + offsetof(struct udphdr, source), new_ports,
				sizeof(new_ports), 0))
		return -1;

	/* ip_forward's ip_decrease_ttl(): TTL - 1, in the 16-bit word TTL . protocol. */
	old_ttl = bpf_htons(((__u16)p->ttl << 8) | IPPROTO_UDP);
	new_ttl = bpf_htons(((__u16)(p->ttl - 1) << 8) | IPPROTO_UDP);
	if (bpf_l3_csum_replace(skb, ip_check, old_ttl, new_ttl, sizeof(new_ttl)))
		return -1;
	if (bpf_skb_store_bytes(skb, p->l3_off + offsetof(struct iphdr, ttl), &new_ttl,
				sizeof(new_ttl), 0))
		return -1;
	return 0;
}

/* Rewrites an IPv6 packet: addresses, ports, hop limit, and the (mandatory) UDP checksum. */
static __always_inline int rewrite_v6(struct __sk_buff *skb, const struct packet *p,
				      const struct fp_rewrite *rw)
{
	__u32 udp_check = p->l4_off + offsetof(struct udphdr, check);
	__u8 old_addrs[32], new_addrs[32];
	__be16 old_ports[2] = {p->sport, p->dport};
	__be16 new_ports[2] = {rw->sport, rw->dport};
	__u8 hop_limit = p->ttl - 1;
	__s64 diff;

	__builtin_memcpy(old_addrs, p->saddr, 16);
	__builtin_memcpy(old_addrs + 16, p->daddr, 16);
	__builtin_memcpy(new_addrs, rw->saddr, 16);
	__builtin_memcpy(new_addrs + 16, rw->daddr, 16);

	/* DNAT + SNAT: the addresses are in the UDP checksum's pseudo header (IPv6 has no
	 * header checksum). */
	diff = bpf_csum_diff((__be32 *)old_addrs, sizeof(old_addrs), (__be32 *)new_addrs,
			     sizeof(new_addrs), 0);
	if (diff < 0)
		return -1;
	if (bpf_l4_csum_replace(skb, udp_check, 0, diff, BPF_F_PSEUDO_HDR))
		return -1;
	if (bpf_skb_store_bytes(skb, p->l3_off + offsetof(struct ipv6hdr, saddr), new_addrs,
				sizeof(new_addrs), 0))
		return -1;

	diff = bpf_csum_diff((__be32 *)old_ports, sizeof(old_ports), (__be32 *)new_ports,
			     sizeof(new_ports), 0);
	if (diff < 0)
		return -1;
	if (bpf_l4_csum_replace(skb, udp_check, 0, diff, 0))
		return -1;
	if (bpf_skb_store_bytes(skb, p->l4_off + offsetof(struct udphdr, source), new_ports,
				sizeof(new_ports), 0))
		return -1;

	/* ip6_forward: hop limit - 1. */
	if (bpf_skb_store_bytes(skb, p->l3_off + offsetof(struct ipv6hdr, hop_limit), &hop_limit,
				sizeof(hop_limit), 0))
		return -1;
	return 0;
}

/* "classifier": the section name aya 0.13 knows for a TC (sched_cls) program. */
SEC("classifier")
int fasp_fast_path(struct __sk_buff *skb)
{
	struct bpf_fib_lookup fib = {};
	struct packet p = {};
	struct fp_rewrite *rw;
	int rc;

	/* Only packets addressed to this host at the link layer are routed by the kernel. */
	if (skb->pkt_type != PACKET_HOST)
		return FALL_THROUGH;
	/* A frame with a VLAN tag (taken off by the driver) is the VLAN device's to receive. */
	if (skb->vlan_present)
		return FALL_THROUGH;
	if (parse(skb, &p))
		return FALL_THROUGH;
	rw = lookup(&p);
	if (!rw)
		return FALL_THROUGH;
	/* nft's `fib daddr type local`: the client must have sent to the proxy address the
	 * session is for (else the reply would come from another address than it sent to). */
	if (!addr_eq(p.daddr, rw->match_daddr))
		return FALL_THROUGH;
	/* ip_forward / ip6_forward: a TTL or hop limit of 1 or less is the kernel's to answer
	 * (ICMP time exceeded). */
	if (p.ttl <= 1)
		return FALL_THROUGH;

	/* The routing decision for the translated packet, as the kernel makes it after DNAT:
	 * input route from the ingress interface (forwarding must be on there), the new
	 * destination, the MTU checked against tot_len. Made before the packet is changed, so a
	 * packet that falls through is unchanged. */
	fib.ifindex = skb->ingress_ifindex;
	fib.l4_protocol = IPPROTO_UDP;
	fib.sport = rw->sport;
	fib.dport = rw->dport;
	fib.tot_len = p.l3_len;
	if (p.family == FP_AF_INET) {
		fib.family = FP_AF_INET;
		fib.tos = p.tos;
		__builtin_memcpy(&fib.ipv4_src, rw->saddr, 4);
		__builtin_memcpy(&fib.ipv4_dst, rw->daddr, 4);
	} else {
		fib.family = FP_AF_INET6;
		fib.flowinfo = p.flowinfo;
		__builtin_memcpy(fib.ipv6_src, rw->saddr, 16);
		__builtin_memcpy(fib.ipv6_dst, rw->daddr, 16);
	}
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	/* Anything but a route with (or without yet) a neighbour: no route, a local or
	 * blackhole destination, forwarding off, or fragmentation needed (FRAG_NEEDED: the
	 * kernel fragments, or sends ICMP "fragmentation needed" / "packet too big"). */
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return FALL_THROUGH;

	/* The translation nftables' DNAT (prerouting) and SNAT (postrouting) make, or
	 * conntrack's reverse translation for a reply, and the forward path's TTL decrement. */
	if ((p.family == FP_AF_INET ? rewrite_v4(skb, &p, rw) : rewrite_v6(skb, &p, rw)) != 0)
		return TC_ACT_SHOT; /* a half-rewritten packet must not leave */

	/* conntrack's per-direction counters (nf_conntrack_acct): packets and L3 bytes. */
	__sync_fetch_and_add(&rw->packets, 1);
	__sync_fetch_and_add(&rw->bytes, p.l3_len);

	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		/* No neighbour entry yet: the kernel's neighbour code resolves the next hop (ARP,
		 * NDP) and sends the packet, as ip_finish_output2 / ip6_finish_output2 do. */
		struct bpf_redir_neigh nh = {};

		nh.nh_family = fib.family;
		if (fib.family == FP_AF_INET)
			nh.ipv4_nh = fib.ipv4_dst;
		else
			__builtin_memcpy(nh.ipv6_nh, fib.ipv6_dst, 16);
		return bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
	}
	/* neigh_output: the next hop's link-layer address, then out of the route's interface. */
	if (bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_dest), fib.dmac, ETH_ALEN, 0) ||
	    bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_source), fib.smac, ETH_ALEN, 0))
		return TC_ACT_SHOT;
	return bpf_redirect(fib.ifindex, 0);
}

char LICENSE[] SEC("license") = "GPL";
