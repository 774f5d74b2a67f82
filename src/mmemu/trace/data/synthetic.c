/* A deterministic program for the record/replay tests: anonymous mmap, faults (read and
 * write), mprotect, mremap, munmap, brk, a file mapping, fork (the child writes part of
 * the parent's memory, then exits), wait, exit.  argv[1]: MiB to touch (default 8);
 * argv[2]: "hold" makes the child sleep (for the kill test); "loop N": N rounds.
 * With MMEMU_SYNTH_TIME=FILE in the environment it writes its run time (ns) to FILE. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoul(argv[1], 0, 10) : 8, len = mib << 20, i;
    int hold = argc > 2 && !strcmp(argv[2], "hold");
    int rounds = argc > 3 && !strcmp(argv[2], "loop") ? atoi(argv[3]) : 1;
    long t0 = now_ns();
    for (int r = 0; r < rounds; r++) {
        char *a = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (a == MAP_FAILED) return 1;
        for (i = 0; i < len; i += 4096) a[i] = 1;                 /* write faults */
        volatile char s = 0;
        char *b = mmap(0, 1 << 20, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        for (i = 0; i < (1 << 20); i += 4096) s += b[i];          /* read faults: zero page */
        mprotect(b, 1 << 20, PROT_READ | PROT_WRITE);
        for (i = 0; i < (1 << 19); i += 4096) b[i] = 2;           /* COW of the zero page */
        char *c = mremap(b, 1 << 20, 4 << 20, MREMAP_MAYMOVE);
        for (i = 0; i < (4 << 20); i += 8192) c[i] = 3;
        munmap(c + (1 << 20), 1 << 20);
        munmap((void *)1, 4096);                                   /* EINVAL */
        char *h = sbrk(0); brk(h + (256 << 10));
        for (i = 0; i < (256 << 10); i += 4096) h[i] = 4;
        int fd = open("/proc/self/exe", O_RDONLY);
        char *f = mmap(0, 8192, PROT_READ, MAP_PRIVATE, fd, 0);
        s += f[0] + f[4096];
        close(fd);
        pid_t p = fork();
        if (p == 0) {
            for (i = 0; i < len / 2; i += 4096) a[i] = 5;         /* COW faults in the child */
            if (hold) pause();
            _exit(0);
        }
        waitpid(p, 0, 0);
        for (i = len / 2; i < len; i += 4096) a[i] = 6;           /* and in the parent */
        munmap(a, len);
        munmap(c, 1 << 20);
        munmap(f, 8192);
    }
    const char *tf = getenv("MMEMU_SYNTH_TIME");
    if (tf) {
        FILE *out = fopen(tf, "w");
        if (out) { fprintf(out, "%ld\n", now_ns() - t0); fclose(out); }
    }
    return 0;
}
