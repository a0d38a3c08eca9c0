/* The container's own network namespace: its loopback, and the interfaces the host moved into it
 * (a veth end on a sandkit network), configured with the classic ioctls: no netlink needed. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cleanup.h"
#include "init.h"

/* The smallest MTU IPv4 allows (RFC 791) and the largest a veth takes. */
#define MIN_MTU 68
#define MAX_MTU 65535

struct netif {
	char *iface;
	struct in_addr address, netmask, gateway;
	bool has_gateway;
	int64_t mtu; /* 0: leave as it is */
};

static int if_flags_up(int fd, const char *name)
{
	struct ifreq ifr;

	memset(&ifr, 0, sizeof(ifr));
	strcpy(ifr.ifr_name, name);
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
		return -1;
	ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
	return ioctl(fd, SIOCSIFFLAGS, &ifr);
}

int loopback_up(struct err *e)
{
	autoclose int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return seterr(e, errno, "bring up lo: socket: %s", strerror(errno));
	if (if_flags_up(fd, "lo") < 0)
		return seterr(e, errno, "bring up lo: %s", strerror(errno));
	return 0;
}

static int parse_ipv4(const struct mp_doc *d, uint32_t map, const char *key, bool need,
		      struct in_addr *out, struct err *e)
{
	char *text = NULL;
	int rc = need ? need_str(d, map, key, &text, e) : get_str(d, map, key, &text, e);

	if (rc <= 0)
		return rc;
	if (inet_pton(AF_INET, text, out) != 1)
		return seterr(e, EINVAL, "\"%s\" is not an IPv4 address: %s", key, text);
	return 1;
}

/* A "net" map: {"iface", "address", "prefix", "gateway" (optional), "mtu" (optional)}. */
static int parse_netif(const struct mp_doc *d, uint32_t map, struct netif *n, struct err *e)
{
	int64_t prefix = -1;
	int gateway;

	memset(n, 0, sizeof(*n));
	if (need_str(d, map, "iface", &n->iface, e) < 0 ||
	    parse_ipv4(d, map, "address", true, &n->address, e) < 0 ||
	    get_int(d, map, "prefix", &prefix, e) < 0 || get_int(d, map, "mtu", &n->mtu, e) < 0 ||
	    (gateway = parse_ipv4(d, map, "gateway", false, &n->gateway, e)) < 0)
		return -1;
	if (!n->iface[0] || strlen(n->iface) >= IFNAMSIZ || strchr(n->iface, '/') ||
	    strchr(n->iface, ':'))
		return seterr(e, EINVAL, "\"iface\" is not an interface name: %s", n->iface);
	if (prefix < 0 || prefix > 32)
		return seterr(e, EINVAL, "\"prefix\" must be 0 to 32, not %lld", (long long)prefix);
	if (n->mtu && (n->mtu < MIN_MTU || n->mtu > MAX_MTU))
		return seterr(e, EINVAL, "\"mtu\" must be %d to %d, not %lld", MIN_MTU, MAX_MTU,
			      (long long)n->mtu);
	n->has_gateway = gateway > 0;
	n->netmask.s_addr = prefix ? htonl(~(uint32_t)0 << (32 - prefix)) : 0;
	return 0;
}

static void set_sin(struct sockaddr *sa, struct in_addr a)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr = a };
	memcpy(sa, &sin, sizeof(sin));
}

static int step_failed(const struct netif *n, const char *step, struct err *e)
{
	char buf[128];
	return seterr(e, errno, "configure %s: %s: %s", n->iface, step,
		      lc_strerror(errno, buf, sizeof(buf)));
}

/* MTU, address and netmask, up, then the default route through the gateway: in that order, as
 * the route needs the gateway's subnet on an interface that is up. */
static int configure(int fd, const struct netif *n, struct err *e)
{
	struct ifreq ifr;
	struct rtentry rt;

	memset(&ifr, 0, sizeof(ifr));
	strcpy(ifr.ifr_name, n->iface);
	if (ioctl(fd, SIOCGIFINDEX, &ifr) < 0) {
		if (errno == ENODEV)
			return seterr(e, ENODEV,
				      "configure %s: the container has no interface %s: the host "
				      "must move it into the container's network namespace first",
				      n->iface, n->iface);
		return step_failed(n, "find the interface", e);
	}
	ifr.ifr_mtu = (int)n->mtu;
	if (n->mtu && ioctl(fd, SIOCSIFMTU, &ifr) < 0)
		return step_failed(n, "set the MTU", e);
	set_sin(&ifr.ifr_addr, n->address);
	if (ioctl(fd, SIOCSIFADDR, &ifr) < 0)
		return step_failed(n, "set the address", e);
	set_sin(&ifr.ifr_netmask, n->netmask);
	if (ioctl(fd, SIOCSIFNETMASK, &ifr) < 0)
		return step_failed(n, "set the netmask", e);
	if (if_flags_up(fd, n->iface) < 0)
		return step_failed(n, "bring it up", e);
	if (!n->has_gateway)
		return 0;
	memset(&rt, 0, sizeof(rt));
	set_sin(&rt.rt_dst, (struct in_addr){ INADDR_ANY });
	set_sin(&rt.rt_genmask, (struct in_addr){ INADDR_ANY });
	set_sin(&rt.rt_gateway, n->gateway);
	rt.rt_flags = RTF_UP | RTF_GATEWAY;
	rt.rt_dev = n->iface;
	if (ioctl(fd, SIOCADDRT, &rt) < 0)
		return step_failed(n, "add the default route through the gateway", e);
	return 0;
}

/* The socket netif requests are served with, opened at the end of set-up (net_keep_socket).
 * Why keep one: after set-up the init runs under the container's seccomp profile, which may
 * forbid socket(2) (a custom one may), while ioctl on an open socket is what every profile
 * sandkit ships allows. The socket pins the container's network namespace, the one it was made
 * in. The ioctls still check CAP_NET_ADMIN at each call, against the credentials of the caller:
 * the init keeps its permitted and effective capabilities after confinement (only its bounding
 * set shrinks, see confine.c), and it is root in a user namespace that owns the container's
 * network namespace (rootless), or real root (root). No container process can reach this fd:
 * it is close-on-exec, and no request hands it out. */
static int kept_socket = -1;

int net_keep_socket(void)
{
	kept_socket = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	return kept_socket < 0 ? -1 : 0;
}

int netif_setup(const struct mp_doc *d, uint32_t map, struct err *e)
{
	struct netif n;
	autoclose int fd = -1;

	if (parse_netif(d, map, &n, e) < 0)
		return -1;
	if ((fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0)
		return seterr(e, errno, "configure %s: socket: %s", n.iface, strerror(errno));
	return configure(fd, &n, e);
}

int do_netif(struct req *r, struct err *e)
{
	struct netif n;
	uint32_t map = 0;

	close_fds(r->fds, r->nfds);
	if (get_type(&r->doc, 0, "net", MP_MAP, &map, e) <= 0)
		return e->no ? -1 : seterr(e, EPROTO, "missing \"net\"");
	if (parse_netif(&r->doc, map, &n, e) < 0)
		return -1;
	if (kept_socket < 0)
		return seterr(e, EOPNOTSUPP,
			      "configure %s: the container has no network namespace of its own "
			      "(network \"host\"): there is nothing to configure",
			      n.iface);
	if (configure(kept_socket, &n, e) < 0)
		return -1;
	return send_simple("ok", r->id);
}
