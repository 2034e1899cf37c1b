/* Peak multiply-accumulates per second of this CPU's AVX-512 units, for cpu_roofline.py.
 *
 * Each thread runs independent chains of one 512-bit instruction (enough chains to hide its
 * latency, so only throughput limits them): VFMADD231PS (fp32, 16 MACs), VDPBF16PS (bf16,
 * 32 MACs) and VPDPBUSD (int8 VNNI, 64 MACs). Prints one JSON object: GMAC/s per precision
 * with every thread running at once.
 *
 *   cc -O2 -mavx512f -mavx512bw -mavx512vnni -mavx512bf16 -pthread peak_macs.c -o peak_macs
 *   ./peak_macs THREADS
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define ITERS 20000000L

static volatile float sink;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* One kernel: NAME runs the 12 chains of OP on accumulators of type T, then folds them into
 * the sink so the compiler cannot drop the loop. */
#define KERNEL(NAME, T, INIT, OP, B, C, FOLD)                                                   \
    static void *NAME(void *arg) {                                                            \
        (void)arg;                                                                            \
        B;                                                                                    \
        C;                                                                                    \
        T x0 = INIT(0), x1 = INIT(1), x2 = INIT(2), x3 = INIT(3), x4 = INIT(4), x5 = INIT(5);  \
        T x6 = INIT(6), x7 = INIT(7), x8 = INIT(8), x9 = INIT(9), x10 = INIT(10), x11 = INIT(11); \
        for (long n = 0; n < ITERS; n++) {                                                    \
            x0 = OP(x0, b, c); x1 = OP(x1, b, c); x2 = OP(x2, b, c); x3 = OP(x3, b, c);        \
            x4 = OP(x4, b, c); x5 = OP(x5, b, c); x6 = OP(x6, b, c); x7 = OP(x7, b, c);        \
            x8 = OP(x8, b, c); x9 = OP(x9, b, c); x10 = OP(x10, b, c); x11 = OP(x11, b, c);    \
        }                                                                                     \
        sink = (float)(FOLD(x0) + FOLD(x1) + FOLD(x2) + FOLD(x3) + FOLD(x4) + FOLD(x5) +      \
                       FOLD(x6) + FOLD(x7) + FOLD(x8) + FOLD(x9) + FOLD(x10) + FOLD(x11));    \
        return NULL;                                                                          \
    }

#define PS(i) _mm512_set1_ps((float)(i))
#define EPI(i) _mm512_set1_epi32(i)
KERNEL(fp32, __m512, PS, _mm512_fmadd_ps, __m512 b = _mm512_set1_ps(1.0001f),
       __m512 c = _mm512_set1_ps(0.999f), _mm512_reduce_add_ps)
KERNEL(bf16, __m512, PS, _mm512_dpbf16_ps, __m512bh b = (__m512bh)_mm512_set1_epi16(0x3f80),
       __m512bh c = (__m512bh)_mm512_set1_epi16(0x3f80), _mm512_reduce_add_ps)
KERNEL(int8, __m512i, EPI, _mm512_dpbusd_epi32, __m512i b = _mm512_set1_epi8(3),
       __m512i c = _mm512_set1_epi8(5), _mm512_reduce_add_epi32)

static double gmacs(void *(*kernel)(void *), int threads, int macs_per_op) {
    pthread_t t[256];
    double start = now();
    for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, kernel, NULL);
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    double ops = (double)ITERS * 12 * threads * macs_per_op;
    return ops / (now() - start) / 1e9;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    if (threads < 1 || threads > 256) {
        fprintf(stderr, "threads must be 1..256\n");
        return 2;
    }
    double f = gmacs(fp32, threads, 16), b = gmacs(bf16, threads, 32), i = gmacs(int8, threads, 64);
    printf("{\"threads\": %d, \"fp32\": %.1f, \"bf16\": %.1f, \"int8\": %.1f}\n", threads, f, b, i);
    return 0;
}
