/* Runs a THP scenario on the live kernel and prints what /proc says after every step.
 * Built and run by tests/thp/live_thp.py. Steps (argv):
 *   map OFF LEN ADV    mmap anonymous private RW at BASE+OFF (MAP_FIXED_NOREPLACE), then
 *                      madvise ADV (0: none) over it
 *   w OFF / r OFF      write a byte / read a byte at BASE+OFF
 *   smap OFF LEN ADV   the same for a MAP_SHARED|MAP_ANONYMOUS mapping (shmem)
 *   fork               fork a child that blocks until `reap` (it touches nothing unless told)
 *   cr OFF / cw OFF    the child reads / writes a byte at BASE+OFF (the parent waits)
 *   reap               let the child exit and wait for it
 *   unmap OFF LEN / prot OFF LEN PROT / madv OFF LEN ADV / remap OFF LEN NEWOFF
 *   collapse OFF LEN   madvise(MADV_COLLAPSE), which may fail: its errno is reported
 *   file K SIZE HOW    create file K (an O_TMPFILE in $MMEMU_THP_DIR, default /var/tmp) and
 *                      write SIZE bytes of 'a' into it: HOW "one" is one write(2), "pages"
 *                      one write(2) per 4 KiB
 *   tfile K SIZE HOW   the same in /dev/shm (tmpfs: shmem)
 *   fmap OFF LEN PROT SHARED K FOFF   mmap file K at BASE+OFF (MAP_FIXED_NOREPLACE),
 *                      MAP_SHARED if SHARED else MAP_PRIVATE, file offset FOFF
 *   trunc K SIZE / fwrite K OFF LEN   ftruncate / pwrite LEN bytes of 'a' at OFF
 * After each step one line each: the step's errno (0 but for collapse), VmPTE RssAnon RssFile
 * RssShmem (kB), the child's VmPTE and RssShmem while it lives (cVmPTE, cRssShmem), the
 * thp_* counters of /proc/vmstat with nr_anon_transparent_hugepages, nr_file_hugepages,
 * nr_file_pmdmapped, nr_shmem_hugepages and nr_shmem_pmdmapped, and for every VMA inside
 * [BASE, BASE + 1 GiB): start end Rss AnonHugePages THPeligible FilePmdMapped
 * ShmemPmdMapped, then its pagemap as runs
 * "flags*count" of flags = present<<3 | swap<<2 | file<<1 | exclusive. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
#define BASE 0x300000000000UL
#define NFILES 4
#define DATA (16 << 20)
static char text[4 << 20];    /* one /proc file at a time: no malloc once the run starts */
static char out[1 << 20];     /* stdout's buffer, flushed after each report */
static char data[DATA];       /* what file and fwrite write, touched before the first report */
static int fds[NFILES] = {-1, -1, -1, -1};
static int last_errno;
static pid_t child = -1;
static char child_status[64];   /* /proc/<child>/status */

static char *slurp(const char *path) {
    int fd = open(path, O_RDONLY);
    size_t n = 0;
    ssize_t r;
    while (fd >= 0 && (r = read(fd, text + n, sizeof text - 1 - n)) > 0) n += r;
    if (fd >= 0) close(fd);
    text[n] = 0;
    return text;
}

static char *next_line(char **cur) {
    char *l = *cur, *nl;
    if (!*l) return 0;
    nl = strchr(l, '\n');
    if (nl) { *nl = 0; *cur = nl + 1; } else *cur = l + strlen(l);
    return l;
}

static long status_kb_of(const char *path, const char *key) {
    char *cur = slurp(path), *l;
    long v = -1;
    size_t n = strlen(key);
    while ((l = next_line(&cur)))
        if (!strncmp(l, key, n) && l[n] == ':') v = atol(l + n + 1);
    return v;
}

static long status_kb(const char *key) { return status_kb_of("/proc/self/status", key); }

static void pagemap_runs(unsigned long s, unsigned long e) {
    int fd = open("/proc/self/pagemap", O_RDONLY);
    uint64_t ent;
    int last = -1;
    long run = 0;
    printf("pm");
    for (unsigned long a = s; a < e; a += 4096) {
        int f = 0;
        if (pread(fd, &ent, 8, (a / 4096) * 8) == 8)
            f = (int)((ent >> 63) & 1) << 3 | (int)((ent >> 62) & 1) << 2 | (int)((ent >> 61) & 1) << 1 | (int)((ent >> 56) & 1);
        if (f != last && run) { printf(" %d*%ld", last, run); run = 0; }
        last = f;
        run++;
    }
    if (run) printf(" %d*%ld", last, run);
    printf("\n");
    close(fd);
}

static void report(const char *step) {
    static unsigned long range[512][2];
    int nvma = 0, in = 0;
    unsigned long s = 0, e = 0;
    long rss = 0, ahp = 0, fpmd = 0, spmd = 0;
    char *cur, *l;
    printf("step %s\nerrno %d\nVmPTE %ld\nRssAnon %ld\nRssFile %ld\nRssShmem %ld\n", step,
           last_errno, status_kb("VmPTE"), status_kb("RssAnon"), status_kb("RssFile"),
           status_kb("RssShmem"));
    if (child > 0)
        printf("cVmPTE %ld\ncRssShmem %ld\n", status_kb_of(child_status, "VmPTE"),
               status_kb_of(child_status, "RssShmem"));
    cur = slurp("/proc/vmstat");
    while ((l = next_line(&cur)))
        if (!strncmp(l, "thp_", 4) || !strncmp(l, "nr_anon_transparent", 19)
            || !strncmp(l, "nr_file_hugepages ", 18) || !strncmp(l, "nr_file_pmdmapped ", 18)
            || !strncmp(l, "nr_shmem_hugepages ", 19) || !strncmp(l, "nr_shmem_pmdmapped ", 19))
            printf("%s\n", l);
    cur = slurp("/proc/self/smaps");
    while ((l = next_line(&cur))) {
        unsigned long a, b;
        if (sscanf(l, "%lx-%lx ", &a, &b) == 2 && !strstr(l, "kB")) {
            in = a >= BASE && b <= BASE + (1UL << 30) && nvma < 512;
            s = a; e = b;
        } else if (in && !strncmp(l, "Rss:", 4)) rss = atol(l + 4);
        else if (in && !strncmp(l, "AnonHugePages:", 14)) ahp = atol(l + 14);
        else if (in && !strncmp(l, "FilePmdMapped:", 14)) fpmd = atol(l + 14);
        else if (in && !strncmp(l, "ShmemPmdMapped:", 15)) spmd = atol(l + 15);
        else if (in && !strncmp(l, "THPeligible:", 12)) {
            printf("vma %lx %lx %ld %ld %d %ld %ld\n", s - BASE, e - BASE, rss, ahp, atoi(l + 12),
                   fpmd, spmd);
            range[nvma][0] = s; range[nvma++][1] = e;
        }
    }
    for (int k = 0; k < nvma; k++) pagemap_runs(range[k][0], range[k][1]);
    printf("end\n");
    fflush(stdout);
}

static int file_arg(const char *s) {
    int k = atoi(s);
    if (k < 0 || k >= NFILES) { fprintf(stderr, "bad file %s\n", s); exit(2); }
    return k;
}

/* the child: commands "r"/"w" + an offset from the parent, an ack after each; EOF ends it */
static void child_loop(int cmd, int ack) {
    char op;
    unsigned long off;
    while (read(cmd, &op, 1) == 1 && read(cmd, &off, sizeof off) == sizeof off) {
        if (op == 'w') *(volatile char *)(BASE + off) = 'y';
        else (void)*(volatile char *)(BASE + off);
        if (write(ack, &op, 1) != 1) _exit(3);
    }
    _exit(0);
}

static void tell_child(int cmd, int ack, char op, unsigned long off) {
    if (write(cmd, &op, 1) != 1 || write(cmd, &off, sizeof off) != sizeof off || read(ack, &op, 1) != 1) {
        fprintf(stderr, "child gone\n");
        exit(2);
    }
}

int main(int argc, char **argv) {
    int pipefd[2] = {-1, -1}, ackfd[2] = {-1, -1};
    const char *dir = getenv("MMEMU_THP_DIR") ? getenv("MMEMU_THP_DIR") : "/var/tmp";
    setvbuf(stdout, out, _IOFBF, sizeof out);
    memset(data, 'a', sizeof data);
    /* every page of the program, libc and the stack in now (write-faulted where writable):
       a libc page faulted in by a step's first call would show in RssFile or RssAnon */
    if (mlockall(MCL_CURRENT)) { perror("mlockall"); return 2; }
    report("start");
    for (int i = 1; i < argc; i++) {
        const char *op = argv[i];
        if (!strcmp(op, "map") || !strcmp(op, "smap")) {
            unsigned long off = strtoul(argv[i + 1], 0, 0), len = strtoul(argv[i + 2], 0, 0);
            int adv = atoi(argv[i + 3]);
            void *p = mmap((void *)(BASE + off), len, PROT_READ | PROT_WRITE,
                           (op[0] == 's' ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
            if (p != (void *)(BASE + off)) { perror("mmap"); return 2; }
            if (adv && madvise(p, len, adv)) { perror("madvise"); return 2; }
            i += 3;
        } else if (!strcmp(op, "w")) {
            *(volatile char *)(BASE + strtoul(argv[++i], 0, 0)) = 'x';
        } else if (!strcmp(op, "r")) {
            (void)*(volatile char *)(BASE + strtoul(argv[++i], 0, 0));
        } else if (!strcmp(op, "fork")) {
            if (pipe(pipefd) || pipe(ackfd)) return 2;
            child = fork();
            if (child == 0) { close(pipefd[1]); close(ackfd[0]); child_loop(pipefd[0], ackfd[1]); }
            close(pipefd[0]);
            close(ackfd[1]);
            snprintf(child_status, sizeof child_status, "/proc/%d/status", (int)child);
        } else if (!strcmp(op, "cr") || !strcmp(op, "cw")) {
            tell_child(pipefd[1], ackfd[0], op[1], strtoul(argv[++i], 0, 0));
        } else if (!strcmp(op, "reap")) {
            close(pipefd[1]);
            waitpid(child, 0, 0);
            close(ackfd[0]);
            child = -1;
        } else if (!strcmp(op, "unmap")) {
            if (munmap((void *)(BASE + strtoul(argv[i + 1], 0, 0)), strtoul(argv[i + 2], 0, 0))) { perror("munmap"); return 2; }
            i += 2;
        } else if (!strcmp(op, "prot")) {
            if (mprotect((void *)(BASE + strtoul(argv[i + 1], 0, 0)), strtoul(argv[i + 2], 0, 0), atoi(argv[i + 3]))) { perror("mprotect"); return 2; }
            i += 3;
        } else if (!strcmp(op, "madv")) {
            if (madvise((void *)(BASE + strtoul(argv[i + 1], 0, 0)), strtoul(argv[i + 2], 0, 0), atoi(argv[i + 3]))) { perror("madvise"); return 2; }
            i += 3;
        } else if (!strcmp(op, "remap")) {
            void *q = mremap((void *)(BASE + strtoul(argv[i + 1], 0, 0)), strtoul(argv[i + 2], 0, 0),
                             strtoul(argv[i + 2], 0, 0), MREMAP_MAYMOVE | MREMAP_FIXED,
                             (void *)(BASE + strtoul(argv[i + 3], 0, 0)));
            if (q == MAP_FAILED) { perror("mremap"); return 2; }
            i += 3;
        } else if (!strcmp(op, "collapse")) {
            last_errno = madvise((void *)(BASE + strtoul(argv[i + 1], 0, 0)), strtoul(argv[i + 2], 0, 0),
                                 MADV_COLLAPSE) ? errno : 0;
            i += 2;
        } else if (!strcmp(op, "file") || !strcmp(op, "tfile")) {
            int k = file_arg(argv[i + 1]);
            long size = strtol(argv[i + 2], 0, 0);
            if (fds[k] >= 0 || size < 0 || size > DATA) { fprintf(stderr, "bad file step\n"); return 2; }
            fds[k] = open(op[0] == 't' ? "/dev/shm" : dir, O_TMPFILE | O_RDWR, 0600);
            if (fds[k] < 0) { perror("open O_TMPFILE"); return 2; }
            if (!strcmp(argv[i + 3], "one")) {
                if (write(fds[k], data, size) != size) { perror("write"); return 2; }
            } else if (!strcmp(argv[i + 3], "pages")) {
                for (long o = 0; o < size; o += 4096) {
                    long n = size - o < 4096 ? size - o : 4096;
                    if (write(fds[k], data, n) != n) { perror("write"); return 2; }
                }
            } else { fprintf(stderr, "bad file step\n"); return 2; }
            i += 3;
        } else if (!strcmp(op, "fmap")) {
            unsigned long off = strtoul(argv[i + 1], 0, 0), len = strtoul(argv[i + 2], 0, 0);
            int k = file_arg(argv[i + 5]);
            void *p = mmap((void *)(BASE + off), len, atoi(argv[i + 3]),
                           (atoi(argv[i + 4]) ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED_NOREPLACE,
                           fds[k], strtol(argv[i + 6], 0, 0));
            if (p != (void *)(BASE + off)) { perror("mmap file"); return 2; }
            i += 6;
        } else if (!strcmp(op, "trunc")) {
            if (ftruncate(fds[file_arg(argv[i + 1])], strtol(argv[i + 2], 0, 0))) {
                perror("ftruncate");
                return 2;
            }
            i += 2;
        } else if (!strcmp(op, "fwrite")) {
            long n = strtol(argv[i + 3], 0, 0);
            if (n < 0 || n > DATA) { fprintf(stderr, "bad fwrite\n"); return 2; }
            if (pwrite(fds[file_arg(argv[i + 1])], data, n, strtol(argv[i + 2], 0, 0)) != n) {
                perror("pwrite");
                return 2;
            }
            i += 3;
        } else { fprintf(stderr, "bad step %s\n", op); return 2; }
        report(op);
        last_errno = 0;
    }
    if (child > 0) { close(pipefd[1]); waitpid(child, 0, 0); }
    return 0;
}
