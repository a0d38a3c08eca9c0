/* The mount an fd is on, by statx's stx_mnt_id: a translation unit of its own, because glibc's
 * struct statx (sys/stat.h) lacks the field and cannot be included beside the kernel's. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/fcntl.h>
#include <linux/stat.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "mountid.h"

int mount_id(int fd, uint64_t *id)
{
	struct statx stx = { 0 };

	if (syscall(SYS_statx, fd, "", AT_EMPTY_PATH, STATX_MNT_ID, &stx) < 0)
		return -1;
	if (!(stx.stx_mask & STATX_MNT_ID)) {
		errno = ENOSYS; /* before Linux 5.8 */
		return -1;
	}
	*id = stx.stx_mnt_id;
	return 0;
}
