/* Files the host gives the container (its /etc/hosts, /etc/resolv.conf), written into the new
 * root before anything is mounted in it, so that they land in the container's own writable layer
 * and nowhere else. The image controls every path on the way: its /etc may be a symlink, and
 * what sits at the name may be a symlink to a host path, a fifo or a directory. So the parent is
 * resolved inside the root without crossing a mount or a magic link, whatever is at the name is
 * unlinked (never opened), and the file is created new, without following a symlink. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "init.h"

/* Inside the root, and on the root's own filesystem: before std_mounts there is no mount under
 * the root but what the rootfs brought, and a file must not go into one. */
#define FILE_PARENT (IN_ROOT | RESOLVE_NO_XDEV)

struct file {
	char *path;
	const uint8_t *data;
	size_t len;
	int64_t mode;
};

static int parse_file(const struct mp_doc *d, uint32_t m, struct file *f, struct err *e)
{
	uint32_t data = 0;

	f->mode = 0644;
	if (d->o[m].type != MP_MAP)
		return seterr(e, EPROTO, "\"files\" entries must be maps");
	if (need_str(d, m, "path", &f->path, e) < 0 || get_int(d, m, "mode", &f->mode, e) < 0 ||
	    get_type(d, m, "data", MP_BIN, &data, e) < 0)
		return -1;
	if (!data)
		return seterr(e, EPROTO, "missing \"data\"");
	f->data = d->o[data].v.p;
	f->len = d->o[data].n;
	if (f->mode < 0 || f->mode > 0777)
		return seterr(e, EINVAL, "file %s: \"mode\" must be permission bits (0 to 0777)",
			      f->path);
	return 0;
}

/* The file's name in its parent directory: the last component of an absolute path, which may
 * not be empty, "." or "..". The path is cut there (the parent stays in f->path). */
static char *split_name(struct file *f, struct err *e)
{
	char *slash = strrchr(f->path, '/');
	char *name = slash ? slash + 1 : NULL;

	if (f->path[0] != '/' || !name || !*name || strcmp(name, ".") == 0 ||
	    strcmp(name, "..") == 0 || strlen(f->path) >= 4096) {
		seterr(e, EINVAL, "file path must be absolute and name a file: %s", f->path);
		return NULL;
	}
	*slash = 0;
	return name;
}

static int write_all(int fd, const uint8_t *p, size_t len)
{
	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int write_file(int rootfd, struct file *f, struct err *e)
{
	char *name = split_name(f, e), *parent = f->path;
	autoclose int dfd = -1, fd = -1;

	if (!name)
		return -1;
	if ((dfd = mkdir_p(rootfd, parent[0] ? parent : "/", 0755, FILE_PARENT)) < 0)
		return seterr(e, errno,
			      "file %s/%s: open or make its directory %s in the container (a "
			      "symlink of the image may lead nowhere): %s",
			      parent, name, parent[0] ? parent : "/", strerror(errno));
	if (unlinkat(dfd, name, 0) < 0 && errno != ENOENT) {
		if (errno == EISDIR)
			return seterr(e, EISDIR,
				      "file %s/%s: the image has a directory there: remove it from "
				      "the image, or give the file another path",
				      parent, name);
		return seterr(e, errno, "file %s/%s: remove what the image has there: %s", parent,
			      name, strerror(errno));
	}
	fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return seterr(e, errno, "file %s/%s: create: %s", parent, name, strerror(errno));
	/* The container's root owns it, whatever the directory's setgid bit or the init's umask
	 * would have made of it. */
	if (write_all(fd, f->data, f->len) < 0 || fchown(fd, 0, 0) < 0 ||
	    fchmod(fd, (mode_t)f->mode) < 0)
		return seterr(e, errno, "file %s/%s: write: %s", parent, name, strerror(errno));
	return 0;
}

int write_files(int rootfd, const struct mp_doc *d, uint32_t arr, struct err *e)
{
	struct file f;

	for (uint32_t k = 0; k < d->o[arr].n; k++)
		if (parse_file(d, mp_elem(d, arr, k), &f, e) < 0 || write_file(rootfd, &f, e) < 0)
			return -1;
	return 0;
}
