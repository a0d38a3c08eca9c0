/* sandkit/_clone.h: the interface of _clone.c.
 *
 * This file is also the cffi cdef (sandkit/_build_clone.py feeds it to cffi with the
 * preprocessor lines removed), so it must stay plain C declarations that cffi can parse:
 * no macros, no includes outside the guard lines, explicit enum values. */
#ifndef SANDKIT_CLONE_H
#define SANDKIT_CLONE_H

/* The step of the child's set-up that failed, as reported through the error pipe. */
enum sk_stage {
    SK_STAGE_WAIT = 1,     /* reading the "go" byte from the parent */
    SK_STAGE_IDS = 2,      /* setresgid/setresuid to 0 inside the new user namespace */
    SK_STAGE_FDS = 3,      /* moving the control socket to fd 3, closing the rest */
    SK_STAGE_STDIO = 4,    /* pointing fds 0, 1 and 2 at /dev/null */
    SK_STAGE_SIGNALS = 5,  /* resetting signal dispositions and the mask */
    SK_STAGE_EXEC = 6,     /* execveat of the init memfd */
    /* The helper of a nested clone (userns_fd >= 0), before the init exists or runs: */
    SK_STAGE_JOIN_USERNS = 7,  /* setns into userns_fd (or: it is no user namespace fd) */
    SK_STAGE_NESTED_CLONE = 8, /* clone3 of the init inside that user namespace */
    SK_STAGE_MAPS = 9          /* writing the init's uid_map, setgroups and gid_map */
};

struct sk_clone_args {
    int control_fd;         /* becomes fd 3 of the init */
    int exec_fd;            /* the sealed memfd holding the init executable */
    int cgroup_fd;          /* a cgroup v2 directory to start in (CLONE_INTO_CGROUP), or -1 */
    int new_user;           /* non-zero: new user namespace, become uid/gid 0 in it */
    int new_net;            /* non-zero: new network namespace */
    int userns_fd;          /* with new_user: nest the new user namespace under this one (an
                             * fd of /proc/<pid>/ns/user), ids mapped by nested_map; -1 = none */
    char *const *argv;      /* NULL-terminated */
    char *const *envp;      /* NULL-terminated */
    const char *nested_map; /* with userns_fd: the uid_map and gid_map text of the new user
                             * namespace ("0 0 65536\n": a parent that maps a range); NULL =
                             * "0 0 1\n" */
    int nested_setgroups;   /* with userns_fd: non-zero leaves setgroups allowed (a parent that
                             * maps a range allows it, as newgidmap does); 0 writes "deny" */
};

struct sk_child {
    int pid;                /* in the caller's pid namespace */
    int pidfd;              /* close-on-exec */
    int go_fd;              /* write one byte here to let the child go on (close-on-exec) */
    int err_fd;             /* EOF here = exec succeeded; else one struct sk_child_error */
    unsigned long region;   /* the child's context and stack: sk_release() it once err_fd */
    unsigned long region_size; /* has said the child exec'd or died (or it was reaped) */
    int failed_stage;       /* when a nested clone fails: the enum sk_stage of its helper's
                             * step that failed (sk_clone returned its -errno), else 0 */
};

/* What a child that failed before exec writes to the error pipe. */
struct sk_child_error {
    int stage;              /* enum sk_stage */
    int err;                /* errno */
};

/* Clones the init into new namespaces. Returns 0 and fills *out, or -errno of clone3 (or of
 * the pipe2 calls before it, or of the nested clone's step named in out->failed_stage); on
 * failure nothing is left open and no child exists (none unreaped either). */
int sk_clone(const struct sk_clone_args *a, struct sk_child *out);

/* Frees the memory the child ran on before exec. Call it only when the child can no longer
 * be using it: after EOF or a report on err_fd, or after reaping the child. */
void sk_release(struct sk_child *c);

#endif
