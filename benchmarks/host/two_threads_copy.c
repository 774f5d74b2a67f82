/* The host's ceiling for two machines on two threads, in C (docs/performance.md, "Two
 * machines on two threads"): each of two workers copies a 64 MiB buffer page by page into
 * a second one (the COW copies), then a third over it (the child's data) -- the data
 * movement of one `two_machines` cycle -- first one worker after the other, then both in
 * two threads at once. Best of 9 rounds each; prints the speedup (serial / parallel).
 * argv[1]: 0 memcpy, 1 rep movsb, 2 non-temporal AVX2 stores; argv[2]: MiB (default 64).
 *
 *   gcc -O2 -mavx2 -pthread -o /tmp/ttc benchmarks/host/two_threads_copy.c
 *   for m in 0 1 2; do chrt -f 50 /tmp/ttc $m; done      # chrt: ahead of other load */
#define _GNU_SOURCE
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int mode;
static size_t size;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void copy_page(char *d, const char *s)
{
    if (mode == 0) {
        memcpy(d, s, 4096);
    } else if (mode == 1) {
        size_t n = 4096;
        asm volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
    } else {
        for (int i = 0; i < 4096; i += 64) {
            __m256i a = _mm256_load_si256((const void *)(s + i));
            __m256i b = _mm256_load_si256((const void *)(s + i + 32));
            _mm256_stream_si256((void *)(d + i), a);
            _mm256_stream_si256((void *)(d + i + 32), b);
        }
    }
}

struct world { char *parent, *child, *data; };

static void *cycle(void *arg)
{
    struct world *w = arg;
    for (size_t o = 0; o < size; o += 4096)
        copy_page(w->child + o, w->parent + o);
    for (size_t o = 0; o < size; o += 4096)
        copy_page(w->child + o, w->data + o);
    _mm_sfence();
    return NULL;
}

int main(int argc, char **argv)
{
    mode = argc > 1 ? atoi(argv[1]) : 0;
    size = (argc > 2 ? strtoul(argv[2], NULL, 10) : 64) << 20;
    struct world w[2];
    for (int i = 0; i < 2; i++) {
        w[i].parent = aligned_alloc(4096, size);
        w[i].child = aligned_alloc(4096, size);
        w[i].data = aligned_alloc(4096, size);
        if (!w[i].parent || !w[i].child || !w[i].data)
            return 1;
        memset(w[i].parent, 1, size);
        memset(w[i].child, 2, size);
        memset(w[i].data, 3, size);
    }
    double serial = 1e9, parallel = 1e9;
    for (int r = 0; r < 9; r++) {
        double t = now();
        cycle(&w[0]);
        cycle(&w[1]);
        double s = now() - t;
        pthread_t th[2];
        t = now();
        for (int i = 0; i < 2; i++)
            pthread_create(&th[i], NULL, cycle, &w[i]);
        for (int i = 0; i < 2; i++)
            pthread_join(th[i], NULL);
        double p = now() - t;
        serial = s < serial ? s : serial;
        parallel = p < parallel ? p : parallel;
    }
    printf("%s, %zu MiB: one after the other %.2f ms, two threads %.2f ms, speedup %.2f\n",
           mode == 0 ? "memcpy" : mode == 1 ? "rep movsb" : "non-temporal",
           size >> 20, serial * 1e3, parallel * 1e3, serial / parallel);
    return 0;
}
