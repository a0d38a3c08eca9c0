/* Mounts the container's overlay root.
 *
 * The new mount API takes each lower layer on its own ("lowerdir+", Linux 6.8), so an image may
 * have as many layers as overlayfs stacks (500) and layer paths may hold ',' or ':'. Older
 * kernels get the classic mount(2) option string, which must fit in one page. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

#include "cleanup.h"
#include "init.h"

/* The kernel explains a refused fs context in messages read from the context fd. */
static void context_error(int fsfd, struct err *e, int no, const char *what)
{
	char log[256];
	ssize_t n = read(fsfd, log, sizeof(log) - 1);
	if (n > 2) {
		log[n] = 0;
		log[strcspn(log, "\n")] = 0;
		seterr(e, no, "mount overlay on /: %s: %s (%s)", what, strerror(no), log + 2);
	} else {
		seterr(e, no, "mount overlay on /: %s: %s", what, strerror(no));
	}
}

/* 1 = mounted, 0 = this kernel lacks the API (use the option string), -1 = failed. */
static int mount_with_fsconfig(const struct overlay *o, const char *target, struct err *e)
{
	char upper[4200], work[4200];
	autoclose int fsfd = fsopen("overlay", FSOPEN_CLOEXEC);
	autoclose int mfd = -1;

	if (fsfd < 0)
		return errno == ENOSYS ? 0 :
					 seterr(e, errno, "fsopen overlay: %s", strerror(errno));
	for (uint32_t k = 0; k < o->n; k++) {
		if (fsconfig(fsfd, FSCONFIG_SET_STRING, "lowerdir+", o->lower[k], 0) == 0)
			continue;
		if (k == 0 && errno == EINVAL) /* no "lowerdir+" before Linux 6.8 */
			return 0;
		context_error(fsfd, e, errno, o->lower[k]);
		return -1;
	}
	snprintf(upper, sizeof(upper), "%s/upper", o->scratch);
	snprintf(work, sizeof(work), "%s/work", o->scratch);
	if (fsconfig(fsfd, FSCONFIG_SET_STRING, "upperdir", upper, 0) < 0 ||
	    fsconfig(fsfd, FSCONFIG_SET_STRING, "workdir", work, 0) < 0 ||
	    (o->userxattr && fsconfig(fsfd, FSCONFIG_SET_FLAG, "userxattr", NULL, 0) < 0) ||
	    fsconfig(fsfd, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) {
		context_error(fsfd, e, errno, "create");
		return -1;
	}
	/* nodev: a device node in an image layer (or made with CAP_MKNOD) must not open. */
	mfd = fsmount(fsfd, FSMOUNT_CLOEXEC, MOUNT_ATTR_NODEV);
	if (mfd < 0)
		return seterr(e, errno, "mount overlay on /: fsmount: %s", strerror(errno));
	if (move_mount(mfd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0)
		return seterr(e, errno, "mount overlay on /: move_mount: %s", strerror(errno));
	return 1;
}

static int mount_with_options(const struct overlay *o, const char *target, struct err *e)
{
	char opts[4096];
	size_t len = (size_t)snprintf(opts, sizeof(opts), "lowerdir=");

	for (uint32_t k = 0; k < o->n; k++) {
		if (strpbrk(o->lower[k], ",:"))
			return seterr(e, EINVAL, "overlay layer path contains ',' or ':': %s",
				      o->lower[k]);
		len += (size_t)snprintf(opts + len, len < sizeof(opts) ? sizeof(opts) - len : 0,
					"%s%s", k ? ":" : "", o->lower[k]);
	}
	len += (size_t)snprintf(opts + len, len < sizeof(opts) ? sizeof(opts) - len : 0,
				",upperdir=%s/upper,workdir=%s/work", o->scratch, o->scratch);
	if (o->userxattr)
		len += (size_t)snprintf(opts + len, len < sizeof(opts) ? sizeof(opts) - len : 0,
					",userxattr");
	if (len >= sizeof(opts))
		return seterr(e, E2BIG,
			      "overlay options too long for this kernel (%u layers): "
			      "Linux >= 6.8 takes any number of layers",
			      o->n);
	if (mount("overlay", target, "overlay", MS_NODEV, opts) < 0)
		return seterr(e, errno, "mount overlay on /: %s", strerror(errno));
	return 0;
}

int mount_overlay(const struct overlay *o, const char *target, struct err *e)
{
	int rc = mount_with_fsconfig(o, target, e);
	if (rc != 0)
		return rc < 0 ? -1 : 0;
	return mount_with_options(o, target, e);
}
