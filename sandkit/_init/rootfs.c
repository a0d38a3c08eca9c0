/* Builds the container root from the setup message, then pivots into it. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cleanup.h"
#include "init.h"

struct ctx {
	int rootfd;
	bool rootless;
	struct err *e;
};

static int mnt(const char *src, int fd, const char *type, unsigned long flags, const char *data)
{
	char p[32];
	fdpath(p, fd);
	return mount(src, p, type, flags, data);
}

static int set_attrs(int dfd, const char *path, bool recursive, uint64_t attrs)
{
	struct mount_attr a = { .attr_set = attrs };
	unsigned flags = (path[0] ? 0 : AT_EMPTY_PATH) | (recursive ? AT_RECURSIVE : 0);
	return (int)syscall(SYS_mount_setattr, dfd, path, flags, &a, sizeof(a));
}

static int set_ro(int dfd, const char *path, bool recursive)
{
	return set_attrs(dfd, path, recursive, MOUNT_ATTR_RDONLY);
}

/* A mount hides what the old fd pointed at, so attributes are applied to a fresh lookup. */
static int set_attrs_at(struct ctx *c, const char *path, bool recursive, uint64_t attrs)
{
	autoclose int fd = resolve(c->rootfd, path, O_PATH, 0);
	if (fd < 0)
		return -1;
	return set_attrs(fd, "", recursive, attrs);
}

static int set_ro_at(struct ctx *c, const char *path, bool recursive)
{
	return set_attrs_at(c, path, recursive, MOUNT_ATTR_RDONLY);
}

/* Mounts on a mount point already resolved inside the root. */
static int mount_on(struct ctx *c, int fd, const char *dst, const char *src, const char *type,
		    unsigned long flags, const char *data)
{
	if (mnt(src, fd, type, flags, data) < 0)
		return seterr(c->e, errno, "mount %s on %s: %s", type ? type : src, dst,
			      strerror(errno));
	return 0;
}

/* A mount the caller asked for: its target may lie behind the image's symlinks, followed as if
 * the container root were "/" (as Docker does). */
static int mount_in(struct ctx *c, const char *dst, bool file, const char *src, const char *type,
		    unsigned long flags, const char *data)
{
	autoclose int fd = file ? make_file(c->rootfd, dst) :
				  mkdir_p(c->rootfd, dst, 0755, IN_ROOT);
	if (fd < 0)
		return seterr(c->e, errno, "create mount point %s: %s", dst, strerror(errno));
	return mount_on(c, fd, dst, src, type, flags, data);
}

/* One of the mounts every container gets (/proc, /dev, /sys...). The init opens files in them
 * (the hostname sysctl, the pty multiplexer), so they must be where they say they are: a
 * symlink anywhere on the way is refused, not followed. */
static int mount_std(struct ctx *c, const char *dst, const char *src, const char *type,
		     unsigned long flags, const char *data)
{
	autoclose int fd = mkdir_p(c->rootfd, dst, 0755, IN_ROOT_NO_SYMLINKS);
	if (fd < 0 && errno == ELOOP)
		return seterr(c->e, ELOOP,
			      "the image's %s is a symlink (or lies behind one): sandkit "
			      "mounts %s only on a real directory; fix the image",
			      dst, type ? type : src);
	if (fd < 0)
		return seterr(c->e, errno, "create mount point %s: %s", dst, strerror(errno));
	return mount_on(c, fd, dst, src, type, flags, data);
}

/* ``layer_fd``: the host's directory for a persistent writable layer (its upper/ and work/), or
 * -1 for one on the scratch tmpfs. */
static int make_rootfs(struct req *r, uint32_t spec, const char *root, const char *scratch,
		       int layer_fd, struct err *e)
{
	const struct mp_doc *d = &r->doc;
	char *kind = NULL, *src = NULL, upper[4200], layer[64];
	bool ux = false;
	uint32_t lower = 0;

	if (need_str(d, spec, "kind", &kind, e) < 0 || get_bool(d, spec, "userxattr", &ux, e) < 0)
		return -1;

	if (strcmp(kind, "overlay") == 0) {
		struct overlay o = { 0 };
		uint32_t n;
		if (get_type(d, spec, "lower", MP_ARRAY, &lower, e) <= 0 || d->o[lower].n == 0)
			return seterr(e, EPROTO, "rootfs: overlay needs at least one \"lower\"");
		n = d->o[lower].n;
		o.lower = arena_alloc(n * sizeof(*o.lower));
		if (!o.lower)
			return seterr(e, ENOMEM, "too many layers");
		for (uint32_t k = 0; k < n; k++)
			if (!(o.lower[k] = dup_strobj(d, mp_elem(d, lower, k), "lower", e)))
				return -1;
		o.n = n;
		o.scratch = scratch;
		if (layer_fd >= 0) {
			/* The directory open_layer checked; its upper/ and work/ were made by the
			 * host, never by the container, which only ever writes inside upper/. */
			snprintf(layer, sizeof(layer), "/proc/self/fd/%d", layer_fd);
			o.scratch = layer;
		}
		/* Even a read-only root gets its writable layer: mount points can be made in it during
		 * set-up, and the root is made read-only once everything is mounted. */
		o.userxattr = ux;
		if (mount_overlay(&o, root, e) < 0)
			return -1;
		/* Kept for commit and diff: once the old root is detached, no path reaches the
		 * upper directory any more, from the host or from the container. Held as a clone of
		 * its own mount, detached: ".." from its root stays there. An fd on the directory
		 * itself would lead up through the old root to the host's directories, for anything
		 * that gets hold of it (a container process given CAP_SYS_PTRACE opens
		 * /proc/1/fd/N). */
		snprintf(upper, sizeof(upper), "%s/upper", o.scratch);
		upper_fd = open_tree(AT_FDCWD, upper,
				     OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_SYMLINK_NOFOLLOW);
		if (upper_fd < 0)
			return seterr(e, errno, "open_tree %s: %s", upper, strerror(errno));
	} else if (strcmp(kind, "bind") == 0) {
		if (need_str(d, spec, "src", &src, e) < 0)
			return -1;
		if (mount(src, root, NULL, MS_BIND | MS_REC, NULL) < 0 ||
		    set_attrs(AT_FDCWD, root, true, MOUNT_ATTR_NODEV) < 0)
			return seterr(e, errno, "bind %s on /: %s", src, strerror(errno));
	} else if (strcmp(kind, "tmpfs") == 0) {
		/* pivot_root needs a mount point. */
		if (mount(root, root, NULL, MS_BIND, NULL) < 0)
			return seterr(e, errno, "bind scratch root on itself: %s", strerror(errno));
	} else {
		return seterr(e, EPROTO, "rootfs: unknown kind \"%s\"", kind);
	}
	return 0;
}

/* One device of the container's /dev: the host's node bound over an empty file. Every other
 * mount in the container is nodev, so these binds are the only device nodes that open, and a
 * node made with CAP_MKNOD or shipped in an image layer is inert. */
static int make_device(int dfd, const char *name)
{
	char host[32], self[48];
	autoclose int fd = openat(dfd, name, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC,
				  0666);

	if (fd < 0)
		return -1;
	snprintf(host, sizeof(host), "/dev/%s", name);
	fdpath(self, fd);
	return mount(host, self, NULL, MS_BIND, NULL);
}

/* The devices and symlinks of the container's fresh /dev. */
static int populate_dev(struct ctx *c)
{
	static const char *const devs[] = { "null", "zero", "full", "random", "urandom", "tty" };
	static const char *const links[][2] = {
		{ "fd", "/proc/self/fd" },       { "stdin", "/proc/self/fd/0" },
		{ "stdout", "/proc/self/fd/1" }, { "stderr", "/proc/self/fd/2" },
		{ "ptmx", "pts/ptmx" },
	};
	autoclose int dfd = resolve_at(c->rootfd, "/dev", O_DIRECTORY, 0, IN_ROOT_NO_SYMLINKS);

	if (dfd < 0)
		return seterr(c->e, errno, "open /dev: %s", strerror(errno));
	for (size_t k = 0; k < sizeof(devs) / sizeof(devs[0]); k++)
		if (make_device(dfd, devs[k]) < 0)
			return seterr(c->e, errno, "create /dev/%s: %s", devs[k], strerror(errno));
	for (size_t k = 0; k < sizeof(links) / sizeof(links[0]); k++)
		if (symlinkat(links[k][1], dfd, links[k][0]) < 0)
			return seterr(c->e, errno, "symlink /dev/%s: %s", links[k][0],
				      strerror(errno));
	return 0;
}

static int std_mounts(struct ctx *c)
{
	const unsigned long nse = MS_NOSUID | MS_NODEV | MS_NOEXEC;

	if (mount_std(c, "/proc", "proc", "proc", nse, NULL) < 0)
		return -1;
	if (mount_std(c, "/dev", "tmpfs", "tmpfs", nse, "mode=755,size=65536,nr_inodes=1024") < 0)
		return -1;
	if (populate_dev(c) < 0)
		return -1;
	if (mount_std(c, "/dev/pts", "devpts", "devpts", MS_NOSUID | MS_NOEXEC,
		      c->rootless ? "newinstance,ptmxmode=0666,mode=0620" :
				    "newinstance,ptmxmode=0666,mode=0620,gid=5") < 0)
		return -1;
	/* Docker's 64 MiB: shared memory is RAM, and rootless on cgroup v1 nothing else bounds it. */
	if (mount_std(c, "/dev/shm", "shm", "tmpfs", nse, "mode=1777,size=64m,nr_inodes=16k") < 0)
		return -1;
	if (mount_std(c, "/sys", "sysfs", "sysfs", nse | MS_RDONLY, NULL) < 0) {
		/* Without owning a net namespace's sysfs, a read-only view of the host's will do. */
		if (!c->rootless || c->e->no == ELOOP)
			return -1;
		if (mount_std(c, "/sys", "/sys", NULL, MS_BIND | MS_REC, NULL) < 0 ||
		    set_ro_at(c, "/sys", true) < 0)
			return seterr(c->e, errno, "bind /sys read-only: %s", strerror(errno));
	}
	return 0;
}

static int user_mount(struct ctx *c, const struct mp_doc *d, uint32_t m)
{
	struct err *e = c->e;
	char *type = NULL, *dst = NULL, *src = NULL, *target = NULL, *lock = NULL;
	int64_t size = 0, mode = 0755;
	bool ro = false, rec = true, nosuid = false, copyup = false;

	if (d->o[m].type != MP_MAP)
		return seterr(e, EPROTO, "\"mounts\" entries must be maps");
	if (need_str(d, m, "type", &type, e) < 0 || need_str(d, m, "dst", &dst, e) < 0)
		return -1;
	if (dst[0] != '/')
		return seterr(e, EINVAL, "mount destination must be absolute: %s", dst);
	if (get_int(d, m, "size", &size, e) < 0 || get_int(d, m, "mode", &mode, e) < 0 ||
	    get_bool(d, m, "ro", &ro, e) < 0 || get_bool(d, m, "rec", &rec, e) < 0 ||
	    get_bool(d, m, "nosuid", &nosuid, e) < 0 || get_bool(d, m, "copyup", &copyup, e) < 0)
		return -1;

	if (strcmp(type, "bind") == 0) {
		struct stat st;
		if (need_str(d, m, "src", &src, e) < 0)
			return -1;
		if (stat(src, &st) < 0)
			return seterr(e, errno, "bind source %s: %s", src, strerror(errno));
		if (copyup && (need_str(d, m, "lock", &lock, e) < 0 ||
			       volume_copyup(c->rootfd, dst, src, lock, e) < 0))
			return -1;
		if (mount_in(c, dst, !S_ISDIR(st.st_mode), src, NULL, MS_BIND | (rec ? MS_REC : 0),
			     NULL) < 0)
			return -1;
		/* No device node reached through a bind may be opened: only /dev's own are usable. */
		if (set_attrs_at(c, dst, rec,
				 MOUNT_ATTR_NODEV | (nosuid ? MOUNT_ATTR_NOSUID : 0) |
					 (ro ? MOUNT_ATTR_RDONLY : 0)) < 0)
			return seterr(e, errno, "remount %s %s: %s", dst,
				      ro ? "read-only" : "nodev", strerror(errno));
	} else if (strcmp(type, "tmpfs") == 0) {
		char opts[64];
		if (size < 0 || mode < 0 || mode > 07777)
			return seterr(e, EINVAL, "tmpfs %s: bad size or mode", dst);
		if (size)
			snprintf(opts, sizeof(opts), "mode=%o,size=%lld", (unsigned)mode,
				 (long long)size);
		else
			snprintf(opts, sizeof(opts), "mode=%o", (unsigned)mode);
		return mount_in(c, dst, false, "tmpfs", "tmpfs", MS_NOSUID | MS_NODEV, opts);
	} else if (strcmp(type, "symlink") == 0) {
		char *slash = strrchr(dst, '/');
		autoclose int dfd = -1;
		if (need_str(d, m, "target", &target, e) < 0)
			return -1;
		*slash = 0;
		dfd = mkdir_p(c->rootfd, dst[0] ? dst : "/", 0755, IN_ROOT);
		*slash = '/';
		if (dfd < 0 || symlinkat(target, dfd, slash + 1) < 0)
			return seterr(e, errno, "symlink %s -> %s: %s", dst, target,
				      strerror(errno));
	} else if (strcmp(type, "dir") == 0) {
		autoclose int fd = mkdir_p(c->rootfd, dst, (mode_t)(mode & 07777), IN_ROOT);
		if (fd < 0)
			return seterr(e, errno, "mkdir %s: %s", dst, strerror(errno));
	} else {
		return seterr(e, EPROTO, "unknown mount type \"%s\"", type);
	}
	return 0;
}

/* Hides one container path (mask: an empty read-only tmpfs over a directory, /dev/null over
 * anything else) or makes it read-only. A path the image does not have is skipped. */
static int hide_or_protect(struct ctx *c, const char *key, const char *p, bool mask)
{
	autoclose int fd = resolve(c->rootfd, p, O_PATH, 0);
	struct stat st;
	char self[32];
	int rc;

	if (fd < 0 && errno == ENOENT)
		return 0;
	if (fd < 0 || fstat(fd, &st) < 0)
		return seterr(c->e, errno, "%s path %s: %s", key, p, strerror(errno));
	if (!mask) {
		fdpath(self, fd);
		rc = mount(self, self, NULL, MS_BIND | MS_REC, NULL);
		if (rc == 0)
			rc = set_ro_at(c, p, true);
	} else if (S_ISDIR(st.st_mode)) {
		rc = mnt("tmpfs", fd, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
			 "size=4k,mode=555");
	} else {
		rc = mnt("/dev/null", fd, NULL, MS_BIND, NULL);
	}
	if (rc < 0)
		return seterr(c->e, errno, "%s %s: %s", mask ? "mask" : "make read-only", p,
			      strerror(errno));
	return 0;
}

static int path_list(struct ctx *c, const struct mp_doc *d, uint32_t setup, const char *key,
		     bool mask)
{
	uint32_t arr = 0;
	int rc = get_type(d, setup, key, MP_ARRAY, &arr, c->e);
	if (rc <= 0)
		return rc;
	for (uint32_t k = 0; k < d->o[arr].n; k++) {
		char *p = dup_strobj(d, mp_elem(d, arr, k), key, c->e);
		if (!p || hide_or_protect(c, key, p, mask) < 0)
			return -1;
	}
	return 0;
}

int hostname_fd = -1;
int upper_fd = -1;

/* The UTS hostname sysctl of the container's own proc mount, opened for writing. Reached from
 * the proc mount itself, without crossing a symlink or another mount, and checked to be procfs:
 * nothing the image holds can turn this open into one of a host file. */
static int open_hostname_sysctl(struct ctx *c)
{
	struct statfs sf;
	autoclose int procfd = resolve_at(c->rootfd, "/proc", O_PATH | O_DIRECTORY, 0,
					  IN_ROOT_NO_SYMLINKS);
	autoclose int fd = -1;

	if (procfd < 0)
		return -1;
	fd = resolve_at(procfd, "sys/kernel/hostname", O_WRONLY | O_NOCTTY | O_NONBLOCK, 0,
			RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV |
				RESOLVE_NO_MAGICLINKS);
	if (fd < 0)
		return -1;
	if (fstatfs(fd, &sf) < 0 || sf.f_type != PROC_SUPER_MAGIC) {
		errno = EXDEV;
		return -1;
	}
	return take_fd(&fd);
}

/* Whether the root is a host directory bound as it is (rootfs kind "bind"), with no layer of its
 * own to write in. */
static bool bound_root(const struct mp_doc *d, uint32_t spec)
{
	struct err ignored = { 0 };
	char *kind = NULL;
	return get_str(d, spec, "kind", &kind, &ignored) > 0 && strcmp(kind, "bind") == 0;
}

/* The host's directory for a persistent writable layer, opened again by its name here (overlay
 * takes its upper directory only from a mount of the caller's own mount namespace, and the
 * host's fd is of the host's) and checked to be the very directory whose fd the host sent
 * with the setup, after checking it is its own with mode 0700. */
static int open_layer(struct req *r, const char *path, struct err *e)
{
	struct stat sent, found;
	autoclose int fd = -1;

	if (r->nfds != 1 || fstat(r->fds[0], &sent) < 0 || !S_ISDIR(sent.st_mode))
		return seterr(e, EPROTO, "\"layer\" comes with the fd of its directory");
	fd = open(path, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &found) < 0)
		return seterr(e, errno, "open the container's layer %s: %s", path, strerror(errno));
	if (found.st_dev != sent.st_dev || found.st_ino != sent.st_ino)
		return seterr(e, EXDEV, "the container's layer %s was replaced during set-up",
			      path);
	return take_fd(&fd);
}

int setup_container(struct req *r, struct err *e)
{
	static const char *const scratch_dirs[] = { "upper", "work", "root" };
	const struct mp_doc *d = &r->doc;
	char *scratch = NULL, *hostname = NULL, root[4200], sub[4200];
	int64_t v = 0, ssize = 0, inodes = 0;
	uint32_t rootspec = 0, mounts = 0, net = 0, files = 0;
	bool rootless = false, ro = false, loopback = false;
	char *layer = NULL;
	autoclose int layer_fd = -1;
	autoclose int rootfd = -1;
	struct ctx c = { -1, false, e };
	char opts[96];
	size_t len;

	if (get_int(d, 0, "v", &v, e) < 0)
		return -1;
	if (v != PROTO_VERSION)
		return seterr(e, EPROTO,
			      "protocol version mismatch: init speaks %d, host sent %lld",
			      PROTO_VERSION, (long long)v);
	if (need_str(d, 0, "scratch", &scratch, e) < 0)
		return -1;
	if (get_type(d, 0, "rootfs", MP_MAP, &rootspec, e) <= 0)
		return e->no ? -1 : seterr(e, EPROTO, "missing \"rootfs\"");
	if (get_int(d, 0, "scratch_size", &ssize, e) < 0 ||
	    get_bool(d, 0, "rootless", &rootless, e) < 0 ||
	    get_str(d, 0, "hostname", &hostname, e) < 0 ||
	    get_type(d, 0, "mounts", MP_ARRAY, &mounts, e) < 0 ||
	    get_bool(d, rootspec, "readonly", &ro, e) < 0 ||
	    get_int(d, 0, "scratch_inodes", &inodes, e) < 0 ||
	    get_bool(d, 0, "loopback", &loopback, e) < 0 || get_str(d, 0, "layer", &layer, e) < 0 ||
	    get_type(d, 0, "net", MP_MAP, &net, e) < 0 ||
	    get_type(d, 0, "files", MP_ARRAY, &files, e) < 0)
		return -1;
	if (net && !loopback)
		return seterr(e, EINVAL,
			      "\"net\" needs a network namespace of the container's own "
			      "(\"loopback\": true)");
	if (strlen(scratch) > 4000 || ssize < 0 || inodes < 0)
		return seterr(e, EINVAL, "bad scratch directory, size or inode count");
	if (layer && *layer && (layer_fd = open_layer(r, layer, e)) < 0)
		return -1;
	c.rootless = rootless;

	/* Nothing done below may leak back into the host's mount namespace. */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return seterr(e, errno, "make mounts private: %s", strerror(errno));
	/* The scratch tmpfs holds the writable layer: its size and inode count are the disk quota. */
	len = (size_t)snprintf(opts, sizeof(opts), "mode=755");
	if (ssize)
		len += (size_t)snprintf(opts + len, sizeof(opts) - len, ",size=%lld",
					(long long)ssize);
	if (inodes)
		snprintf(opts + len, sizeof(opts) - len, ",nr_inodes=%lld", (long long)inodes);
	if (mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0)
		return seterr(e, errno, "mount tmpfs on scratch %s: %s", scratch, strerror(errno));
	for (size_t k = 0; k < sizeof(scratch_dirs) / sizeof(scratch_dirs[0]); k++) {
		snprintf(sub, sizeof(sub), "%s/%s", scratch, scratch_dirs[k]);
		if (mkdir(sub, 0755) < 0)
			return seterr(e, errno, "mkdir %s: %s", sub, strerror(errno));
	}
	snprintf(root, sizeof(root), "%s/root", scratch);
	if (make_rootfs(r, rootspec, root, scratch, layer_fd, e) < 0)
		return -1;
	c.rootfd = rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return seterr(e, errno, "open new root: %s", strerror(errno));

	/* First in the root: nothing is mounted in it yet, so the files go into its own layer. */
	if (files && bound_root(d, rootspec))
		return seterr(e, EINVAL,
			      "\"files\" need a root with a writable layer: a \"bind\" "
			      "root is a host directory, which they would change");
	if (files && write_files(rootfd, d, files, e) < 0)
		return -1;
	if (loopback && loopback_up(e) < 0)
		return -1;
	if (net && netif_setup(d, net, e) < 0)
		return -1;
	if (hostname && sethostname(hostname, strlen(hostname)) < 0)
		return seterr(e, errno, "sethostname %s: %s", hostname, strerror(errno));
	if (std_mounts(&c) < 0)
		return -1;
	if (!hostname || !*hostname)
		hostname_fd = open_hostname_sysctl(&c);
	for (uint32_t k = 0; mounts && k < d->o[mounts].n; k++)
		if (user_mount(&c, d, mp_elem(d, mounts, k)) < 0)
			return -1;
	if (path_list(&c, d, 0, "masked", true) < 0 || path_list(&c, d, 0, "readonly", false) < 0)
		return -1;

	/* Stack the old root under the new one and detach it: no path back to the host remains. */
	if (fchdir(rootfd) < 0 || syscall(SYS_pivot_root, ".", ".") < 0)
		return seterr(e, errno, "pivot_root: %s", strerror(errno));
	if (umount2(".", MNT_DETACH) < 0 || chdir("/") < 0)
		return seterr(e, errno, "detach old root: %s", strerror(errno));
	if (ro && set_ro(AT_FDCWD, "/", false) < 0)
		return seterr(e, errno, "remount / read-only: %s", strerror(errno));
	return 0;
}
