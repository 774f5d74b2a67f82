/* Runs a THP scenario on the live kernel and prints what /proc says after every step.
 * Built and run by tests/thp/live_thp.py. Steps (argv):
 *   map OFF LEN ADV    mmap anonymous private RW at BASE+OFF (MAP_FIXED_NOREPLACE), then
 *                      madvise ADV (0: none) over it
 *   w OFF / r OFF      write a byte / read a byte at BASE+OFF
 *   fork               fork a child that blocks until `reap` (it touches nothing)
 *   reap               let the child exit and wait for it
 *   unmap OFF LEN / prot OFF LEN PROT / madv OFF LEN ADV / remap OFF LEN NEWOFF
 *   collapse OFF LEN   madvise(MADV_COLLAPSE), which may fail: its errno is reported
 * After each step one line: the step's errno (0 but for collapse), VmPTE RssAnon (kB), the thp_* counters of /proc/vmstat, and
 * for every VMA inside [BASE, BASE + 1 GiB): start end Rss AnonHugePages THPeligible, then
 * its pagemap as runs "flags*count" of flags = present<<3 | swap<<2 | file<<1 | exclusive. */
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
static char buf[1 << 20];
static int last_errno;

static long status_kb(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    long v = -1;
    size_t n = strlen(key);
    while (fgets(buf, sizeof buf, f))
        if (!strncmp(buf, key, n) && buf[n] == ':') v = atol(buf + n + 1);
    fclose(f);
    return v;
}

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
    FILE *f;
    printf("step %s\nerrno %d\nVmPTE %ld\nRssAnon %ld\n", step, last_errno, status_kb("VmPTE"),
           status_kb("RssAnon"));
    f = fopen("/proc/vmstat", "r");
    while (fgets(buf, sizeof buf, f))
        if (!strncmp(buf, "thp_", 4) || !strncmp(buf, "nr_anon_transparent", 19)) printf("%s", buf);
    fclose(f);
    f = fopen("/proc/self/smaps", "r");
    unsigned long s = 0, e = 0;
    long rss = 0, ahp = 0;
    int in = 0;
    while (fgets(buf, sizeof buf, f)) {
        unsigned long a, b;
        if (sscanf(buf, "%lx-%lx ", &a, &b) == 2 && strchr(buf, ':') != buf + strlen(buf) && buf[0] != ' ' && strstr(buf, " ") && !strstr(buf, "kB")) {
            in = a >= BASE && b <= BASE + (1UL << 30);
            s = a; e = b;
        } else if (in && !strncmp(buf, "Rss:", 4)) rss = atol(buf + 4);
        else if (in && !strncmp(buf, "AnonHugePages:", 14)) ahp = atol(buf + 14);
        else if (in && !strncmp(buf, "THPeligible:", 12))
            printf("vma %lx %lx %ld %ld %d\n", s - BASE, e - BASE, rss, ahp, atoi(buf + 12));
    }
    fclose(f);
    f = fopen("/proc/self/maps", "r");
    while (fgets(buf, sizeof buf, f)) {
        unsigned long a, b;
        if (sscanf(buf, "%lx-%lx ", &a, &b) == 2 && a >= BASE && b <= BASE + (1UL << 30))
            pagemap_runs(a, b);
    }
    fclose(f);
    printf("end\n");
    fflush(stdout);
}

int main(int argc, char **argv) {
    int pipefd[2] = {-1, -1};
    pid_t child = -1;
    report("start");
    for (int i = 1; i < argc; i++) {
        const char *op = argv[i];
        if (!strcmp(op, "map")) {
            unsigned long off = strtoul(argv[i + 1], 0, 0), len = strtoul(argv[i + 2], 0, 0);
            int adv = atoi(argv[i + 3]);
            void *p = mmap((void *)(BASE + off), len, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
            if (p != (void *)(BASE + off)) { perror("mmap"); return 2; }
            if (adv && madvise(p, len, adv)) { perror("madvise"); return 2; }
            i += 3;
        } else if (!strcmp(op, "w")) {
            *(volatile char *)(BASE + strtoul(argv[++i], 0, 0)) = 'x';
        } else if (!strcmp(op, "r")) {
            (void)*(volatile char *)(BASE + strtoul(argv[++i], 0, 0));
        } else if (!strcmp(op, "fork")) {
            char c;
            if (pipe(pipefd)) return 2;
            child = fork();
            if (child == 0) { close(pipefd[1]); if (read(pipefd[0], &c, 1) < 0) _exit(3); _exit(0); }
            close(pipefd[0]);
        } else if (!strcmp(op, "reap")) {
            close(pipefd[1]);
            waitpid(child, 0, 0);
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
        } else { fprintf(stderr, "bad step %s\n", op); return 2; }
        report(op);
        last_errno = 0;
    }
    if (child > 0) { close(pipefd[1]); waitpid(child, 0, 0); }
    return 0;
}
