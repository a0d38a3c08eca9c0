#ifndef SANDKIT_MOUNTID_H
#define SANDKIT_MOUNTID_H
#include <stdint.h>

/* The id of the mount fd is on (statx's stx_mnt_id); -1 with errno on failure. */
int mount_id(int fd, uint64_t *id);

#endif
