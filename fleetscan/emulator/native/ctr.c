/*
 * fleetscan-ctr: the emulator's tiny container runtime helper.
 *
 * One static binary with three modes, so that no interpreter starts per container:
 *   start  create a container main process in new (or joined) PID and mount namespaces,
 *          mount its overlay root, /proc and /dev, chroot, apply uid/gid/capabilities and
 *          exec the entrypoint (or pause). Prints the main process's host PID once ready,
 *          then waits for it, so that killing this helper kills the container (PDEATHSIG).
 *   exec   enter a running container (mount ns, root, PID ns of its main process), apply
 *          the container's credentials and exec argv; exits with argv's status.
 *   pause  (any other argv) sleep forever, reap orphans, exit on SIGTERM/SIGINT. Also used
 *          as the "application" binary of generated images, since it is static.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static void die(const char *what) {
    fprintf(stderr, "fleetscan-ctr: %s: %s\n", what, strerror(errno));
    _exit(125);
}

static volatile sig_atomic_t stop_requested = 0;
static void on_stop(int sig) { (void)sig; stop_requested = 1; }
static void on_chld(int sig) { (void)sig; }

static int pause_main(void) {
    /* Never outlive the process that started us (a container helper, or the emulator itself
     * when this is the rootless keeper). */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_chld;
    sigaction(SIGCHLD, &sa, NULL);
    while (!stop_requested) {
        while (waitpid(-1, NULL, WNOHANG) > 0) {
        }
        pause();
    }
    return 0;
}

struct creds {
    int set_ids;
    uid_t uid;
    gid_t gid;
    int set_caps;
    uint64_t caps;
};

/* Keep only the capabilities in c->caps (bounding, permitted, effective, inheritable),
 * then switch uid/gid. A non-zero uid loses every capability on setuid, as in a container. */
static void apply_creds(const struct creds *c) {
    if (c->set_caps) {
        for (int cap = 0; cap <= 63; cap++) {
            if (!(c->caps & (1ULL << cap))) {
                if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) die("drop bounding capability");
            }
        }
    }
    if (c->set_ids) {
        /* A user namespace mapped by an unprivileged user denies setgroups; nothing to drop then. */
        if (setgroups(0, NULL) != 0 && errno != EPERM) die("setgroups");
        if (setresgid(c->gid, c->gid, c->gid) != 0) die("setgid");
        if (setresuid(c->uid, c->uid, c->uid) != 0) die("setuid");
    }
    if (c->set_caps && (!c->set_ids || c->uid == 0)) {
        struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
        struct __user_cap_data_struct data[2];
        memset(data, 0, sizeof data);
        data[0].effective = data[0].permitted = data[0].inheritable = (uint32_t)(c->caps & 0xffffffffu);
        data[1].effective = data[1].permitted = data[1].inheritable = (uint32_t)(c->caps >> 32);
        if (syscall(SYS_capset, &hdr, data) != 0) die("capset");
    }
}

static void bind_dev(const char *root, const char *name) {
    char target[4096];
    char source[64];
    snprintf(target, sizeof target, "%s/dev/%s", root, name);
    snprintf(source, sizeof source, "/dev/%s", name);
    int fd = open(target, O_CREAT | O_WRONLY | O_CLOEXEC, 0666);
    if (fd >= 0) close(fd);
    if (mount(source, target, NULL, MS_BIND, NULL) != 0) die("bind /dev node");
}

static void setup_root(const char *root, const char *lower, const char *upper, const char *work) {
    char path[4096];
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) die("make mounts private");
    if (lower) {
        char opts[8192];
        snprintf(opts, sizeof opts, "lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work);
        if (mount("overlay", root, "overlay", 0, opts) != 0) die("mount overlay");
    }
    snprintf(path, sizeof path, "%s/proc", root);
    mkdir(path, 0555);
    if (mount("proc", path, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0) die("mount proc");
    snprintf(path, sizeof path, "%s/dev", root);
    mkdir(path, 0755);
    if (mount("tmpfs", path, "tmpfs", MS_NOSUID, "mode=755,size=65536k") != 0) die("mount /dev");
    const char *nodes[] = {"null", "zero", "full", "random", "urandom", "tty"};
    for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++) bind_dev(root, nodes[i]);
    snprintf(path, sizeof path, "%s/dev/fd", root);
    if (symlink("/proc/self/fd", path) != 0) die("symlink /dev/fd");
    snprintf(path, sizeof path, "%s/tmp", root);
    mkdir(path, 01777);
    if (chdir(root) != 0) die("chdir root");
    if (chroot(".") != 0) die("chroot");
    if (chdir("/") != 0) die("chdir /");
}

/* -g FILE (up to MAX_CGROUPS times): the cgroup.procs files of the container's cgroups (one per
 * hierarchy), opened while the host's /sys is still visible; the child writes itself into each
 * before it drops its privileges. -m BYTES: the fallback memory limit (RLIMIT_AS) for hosts where
 * no memory cgroup can be made. */
#define MAX_CGROUPS 4
struct limits {
    const char *cgroups[MAX_CGROUPS];
    int fds[MAX_CGROUPS];
    int ncgroups;
    unsigned long long memory;
};

static int parse_limits(struct limits *l, int opt, const char *arg) {
    if (opt == 'g' && l->ncgroups < MAX_CGROUPS) { l->cgroups[l->ncgroups++] = arg; return 1; }
    if (opt == 'm') { l->memory = strtoull(arg, NULL, 10); return 1; }
    return 0;
}

static void open_cgroups(struct limits *l) {
    for (int i = 0; i < l->ncgroups; i++) l->fds[i] = open(l->cgroups[i], O_WRONLY | O_CLOEXEC);
}

static void join_cgroups(const struct limits *l) {
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    for (int i = 0; i < l->ncgroups; i++) {
        if (l->fds[i] < 0) continue;
        if (write(l->fds[i], pid, (size_t)n) != n) { /* a container without its cgroup still runs */ }
        close(l->fds[i]);
    }
    if (l->memory) {
        struct rlimit rl = {(rlim_t)l->memory, (rlim_t)l->memory};
        if (setrlimit(RLIMIT_AS, &rl) != 0) die("setrlimit");
    }
}

static void parse_creds(struct creds *c, int opt, const char *arg) {
    if (opt == 'U') { c->set_ids = 1; c->uid = (uid_t)strtoul(arg, NULL, 10); }
    if (opt == 'G') { c->set_ids = 1; c->gid = (gid_t)strtoul(arg, NULL, 10); }
    if (opt == 'c') { c->set_caps = 1; c->caps = strtoull(arg, NULL, 16); }
}

/* Rootless mode: enter the emulator's user namespace (and, for `start`, its mount namespace)
 * held by a keeper process. As its owner we have every capability inside it. */
static void join_keeper(pid_t keeper, int with_mounts) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/ns/user", keeper);
    int userfd = open(path, O_RDONLY | O_CLOEXEC);
    snprintf(path, sizeof path, "/proc/%d/ns/mnt", keeper);
    int mntfd = open(path, O_RDONLY | O_CLOEXEC);
    if (userfd < 0 || mntfd < 0) die("open keeper namespaces");
    if (setns(userfd, CLONE_NEWUSER) != 0) die("enter user namespace");
    if (with_mounts && setns(mntfd, CLONE_NEWNS) != 0) die("enter keeper mount namespace");
    close(userfd);
    close(mntfd);
}

static int forward_pid = 0;
static void forward_kill(int sig) { (void)sig; if (forward_pid > 0) kill(forward_pid, SIGKILL); }

static int wait_status(pid_t child) {
    int status = 0;
    while (waitpid(child, &status, 0) < 0) {
        if (errno != EINTR) die("waitpid");
    }
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return 128 + WTERMSIG(status);
}

/* start -r ROOT [-l LOWER -u UPPER -w WORK] [-P | -j PID] [-N KEEPER] [-U uid] [-G gid] [-c hexcaps]
 *       [-g CGROUP_PROCS]... [-m BYTES] [-- argv] */
static int start_main(int argc, char **argv) {
    const char *root = NULL, *lower = NULL, *upper = NULL, *work = NULL;
    struct limits lim = {0};
    int new_pidns = 0;
    pid_t join = 0, keeper = 0;
    struct creds c = {0};
    int opt;
    while ((opt = getopt(argc, argv, "+r:l:u:w:Pj:N:U:G:c:g:m:")) != -1) {
        if (parse_limits(&lim, opt, optarg)) continue;
        switch (opt) {
        case 'N': keeper = (pid_t)atoi(optarg); break;
        case 'r': root = optarg; break;
        case 'l': lower = optarg; break;
        case 'u': upper = optarg; break;
        case 'w': work = optarg; break;
        case 'P': new_pidns = 1; break;
        case 'j': join = (pid_t)atoi(optarg); break;
        default: parse_creds(&c, opt, optarg);
        }
    }
    if (!root) { fprintf(stderr, "fleetscan-ctr start: -r ROOT is required\n"); return 64; }
    /* SIGTERM (from the runtime, or PDEATHSIG when the emulator dies) kills the main process and
     * reaps it here, so no zombie is left to a host init that may not reap. */
    signal(SIGTERM, forward_kill);
    signal(SIGINT, forward_kill);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    int self = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (self < 0) die("open self");
    open_cgroups(&lim);
    if (keeper) join_keeper(keeper, 1);
    if (join) {
        char nspath[64];
        snprintf(nspath, sizeof nspath, "/proc/%d/ns/pid", join);
        int fd = open(nspath, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || setns(fd, CLONE_NEWPID) != 0) die("join pid namespace");
        close(fd);
    } else if (new_pidns && unshare(CLONE_NEWPID) != 0) {
        die("new pid namespace");
    }
    int sync[2];
    if (pipe2(sync, O_CLOEXEC) != 0) die("pipe");
    pid_t child = fork();
    if (child < 0) die("fork");
    forward_pid = child;
    if (child == 0) {
        close(sync[0]);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        join_cgroups(&lim);
        if (unshare(CLONE_NEWNS) != 0) die("new mount namespace");
        setup_root(root, lower, upper, work);
        apply_creds(&c);
        if (write(sync[1], "1", 1) != 1) die("report ready");
        /* The entrypoint logs to the container log, which the caller passed as stderr. */
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) { dup2(devnull, STDIN_FILENO); close(devnull); }
        dup2(STDERR_FILENO, STDOUT_FILENO);
        char **rest = argv + optind;
        if (rest[0]) {
            execvp(rest[0], rest);
        }
        char *pause_argv[] = {"pause", NULL};
        fexecve(self, pause_argv, environ);
        die("exec pause");
    }
    close(sync[1]);
    char ok;
    ssize_t n;
    do { n = read(sync[0], &ok, 1); } while (n < 0 && errno == EINTR);
    if (n != 1) { wait_status(child); return 125; }
    printf("%d\n", child);
    fflush(stdout);
    return wait_status(child);
}

/* exec -t PID [-N KEEPER] [-U uid] [-G gid] [-c hexcaps] [-d DIR] [-s FD] [-g CGROUP_PROCS]... [-m BYTES]
 *      -- argv */
static int exec_main(int argc, char **argv) {
    pid_t target = 0, keeper = 0;
    const char *dir = "/";
    struct limits lim = {0};
    int status_fd = -1;
    struct creds c = {0};
    int opt;
    while ((opt = getopt(argc, argv, "+t:N:U:G:c:d:s:g:m:")) != -1) {
        if (parse_limits(&lim, opt, optarg)) continue;
        switch (opt) {
        case 't': target = (pid_t)atoi(optarg); break;
        case 'N': keeper = (pid_t)atoi(optarg); break;
        case 'd': dir = optarg; break;
        case 's': status_fd = atoi(optarg); break;
        default: parse_creds(&c, opt, optarg);
        }
    }
    if (!target || !argv[optind]) { fprintf(stderr, "fleetscan-ctr exec: -t PID and argv are required\n"); return 64; }
    signal(SIGTERM, forward_kill);
    signal(SIGINT, forward_kill);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    open_cgroups(&lim);
    if (keeper) join_keeper(keeper, 0);
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/root", target);
    int rootfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    snprintf(path, sizeof path, "/proc/%d/ns/mnt", target);
    int mntfd = open(path, O_RDONLY | O_CLOEXEC);
    snprintf(path, sizeof path, "/proc/%d/ns/pid", target);
    int pidfd = open(path, O_RDONLY | O_CLOEXEC);
    if (rootfd < 0 || mntfd < 0 || pidfd < 0) die("open container namespaces");
    if (setns(mntfd, CLONE_NEWNS) != 0) die("enter mount namespace");
    if (fchdir(rootfd) != 0 || chroot(".") != 0) die("enter container root");
    if (setns(pidfd, CLONE_NEWPID) != 0) die("enter pid namespace");
    pid_t child = fork();
    if (child < 0) die("fork");
    forward_pid = child;
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        join_cgroups(&lim);
        if (chdir(dir) != 0 && chdir("/") != 0) die("chdir");
        apply_creds(&c);
        if (status_fd >= 0) fcntl(status_fd, F_SETFD, FD_CLOEXEC); /* argv must not inherit it */
        execvp(argv[optind], argv + optind);
        int err = errno;
        if (status_fd >= 0) {
            dprintf(status_fd, "%s\n", err == ENOENT ? "ENOENT" : err == EACCES ? "EACCES" : "EXECFAIL");
        } else {
            fprintf(stderr, "exec %s: %s\n", argv[optind], strerror(err));
        }
        _exit(err == ENOENT ? 127 : 126);
    }
    if (status_fd >= 0) close(status_fd);
    return wait_status(child);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "start") == 0) return start_main(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "exec") == 0) return exec_main(argc - 1, argv + 1);
    return pause_main();
}
