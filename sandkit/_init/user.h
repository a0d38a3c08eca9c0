#ifndef SK_USER_H
#define SK_USER_H

#include <sys/types.h>

#include "init.h"

#define USER_MAX_GROUPS 64

struct user {
	unsigned uid, gid;
	const char *home;
	char name[256];
	gid_t groups[USER_MAX_GROUPS];
	int ngroups;
};

/* Fills *u from a Docker-style `user` string; -1 with e set (ENOENT) for an unknown name. */
int resolve_user(const char *spec, struct user *u, struct err *e);

#endif
