/* The decoding benchmark's memory-bandwidth probe: how fast THREADS threads read memory.
 *
 * usage: membw [THREADS] [MIB]   (defaults: 2 threads, 512 MiB)
 * build: gcc -O3 -march=native -fopenmp bench/membw.c -o target/membw   (scripts/bench does it)
 *
 * Sums an array of MIB MiB of u64 (each thread its own contiguous part, first touched by the
 * thread that reads it; vectorized by -O3 -march=native, so the adds are not the limit: -O2's
 * scalar loop reads about a quarter slower on a 2-core Xeon), 5 times; prints
 * one JSON line with the best pass as read bandwidth in GB/s (10^9 bytes/s). Decoding one token
 * at batch 1 reads every weight once, so weight bytes / this bandwidth bounds the time per token
 * from below. */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    size_t mib = argc > 2 ? strtoull(argv[2], NULL, 10) : 512;
    if (threads < 1 || mib < 1) {
        fprintf(stderr, "usage: membw [THREADS >= 1] [MIB >= 1]\n");
        return 2;
    }
    size_t n = mib << 17; /* u64 per MiB: 2^20 / 8 */
    uint64_t *a = malloc(n * sizeof *a);
    if (!a) {
        fprintf(stderr, "membw: cannot allocate %zu MiB\n", mib);
        return 1;
    }
    omp_set_num_threads(threads);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) a[i] = i;
    double best = 1e300;
    uint64_t check = 0;
    for (int pass = 0; pass < 5; pass++) {
        uint64_t total = 0;
        double started = omp_get_wtime();
#pragma omp parallel for schedule(static) reduction(+ : total)
        for (size_t i = 0; i < n; i++) total += a[i];
        double seconds = omp_get_wtime() - started;
        if (seconds < best) best = seconds;
        check = total;
    }
    if (check != (uint64_t)n * (n - 1) / 2) { /* keeps the sums; catches a wrong loop */
        fprintf(stderr, "membw: wrong sum\n");
        return 1;
    }
    printf("{\"job\": \"membw\", \"threads\": %d, \"bytes\": %zu, \"read_gb_per_s\": %.2f}\n", threads, n * sizeof *a,
           n * sizeof *a / best / 1e9);
    free(a);
    return 0;
}
