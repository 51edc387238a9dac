/* The `skip-element` step of bayes and adam written by hand in C, to hold the Rust fast path
 * (src/cpu.rs, CpuPath::Parallel) against: the same arrays, the same element arithmetic
 * statement for statement (src/reference/bayes.rs, adam.rs at their default configs), the same
 * 64 Ki-element chunks handed to the same number of threads, each chunk checked for non-finite
 * gradients just before it is updated, and the same touch and copy between steps as
 * `bayesprop bench` runs. Built by scripts/c_loop.sh with -ffp-contract=off, because Rust never
 * contracts a * b + c to an FMA and the comparison is of the same arithmetic.
 *
 * usage: step bayes|adam N STEPS   (threads: OMP_NUM_THREADS)
 * prints one line: optimizer, n, threads, median step seconds, median touch seconds, and a
 * sample sum of θ (so that the compiler cannot drop the work). */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHUNK (1 << 16) /* cpu::PARALLEL_CHUNK */

/* roofline::synthetic: xorshift64 per chunk, values in ±[0.5, 1.5)·scale. */
static void synthetic(float *out, size_t n, uint64_t seed, float scale) {
    size_t chunks = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static)
    for (size_t c = 0; c < chunks; c++) {
        uint64_t x = (seed ^ (c * 0x9e3779b97f4a7c15ull)) | 1;
        size_t end = (c + 1) * CHUNK < n ? (c + 1) * CHUNK : n;
        for (size_t i = c * CHUNK; i < end; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            float unit = (float)(x >> 40) / (float)(1ull << 24);
            float sign = (x & 1) == 0 ? 1.0f : -1.0f;
            out[i] = sign * (0.5f + unit) * scale;
        }
    }
}

static float *array(size_t n, float fill) {
    float *v = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
    if (!v) {
        perror("aligned_alloc");
        exit(1);
    }
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) v[i] = fill;
    return v;
}

static int nonfinite(float x) {
    uint32_t bits;
    memcpy(&bits, &x, 4);
    return (bits & 0x7f800000u) == 0x7f800000u;
}

static uint32_t count_nonfinite(const float *g, size_t n) {
    uint32_t count = 0;
    for (size_t i = 0; i < n; i++) count += nonfinite(g[i]);
    return count;
}

/* BayesScalars at step t, from f64 rounded to f32 as the Rust host does (defaults: beta 0.999,
 * eta 1e-3, eps 1e-8, bias correction, sigma_max fixed_point, no decay, no momentum). */
typedef struct {
    float beta, one_minus_beta, c2, weight_decay, eta, eta_sq, eps_sq, bound;
} Bayes;

static Bayes bayes_at(uint64_t t) {
    double beta = 0.999, eta = 1e-3, eps = 1e-8;
    Bayes p = {(float)beta, (float)(1.0 - beta), (float)(1.0 / (1.0 - pow(beta, (double)t))),
               0.0f, (float)eta, (float)(eta * eta), (float)(eps * eps), 1.0f};
    return p;
}

/* reference::bayes::update::<STAR = true> without momentum, branch-free as there. */
static void bayes_chunk(const Bayes *restrict q, float *restrict theta, const float *restrict g,
                        float *restrict s, float *restrict sigma, size_t n) {
    const Bayes p = *q;
    for (size_t i = 0; i < n; i++) {
        float th = theta[i], sig0 = sigma[i], gi = g[i];
        float s_new = p.beta * s[i] + p.one_minus_beta * gi * gi;
        float s_hat = s_new * p.c2;
        float h = s_hat + p.weight_decay;
        float d = gi + p.weight_decay * th;
        float star = p.eta_sq * 0.5f + p.eta * sqrtf(p.eta_sq * 0.25f + 1.0f / (h + p.eps_sq));
        float sig1 = (sig0 == 0.0f && h > 0.0f) ? star : sig0;
        float post = sig1 / (1.0f + h * sig1) + p.eta_sq;
        post = (p.bound > 0.0f && post > star) ? star : post;
        int live = sig1 > 0.0f;
        theta[i] = live ? th - post * d : th;
        s[i] = s_new;
        sigma[i] = live ? post : sig1;
    }
}

/* AdamScalars at step t (torch defaults: lr 1e-3, betas 0.9/0.999, eps 1e-8, no decay). */
typedef struct {
    float lr, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, c1, c2;
} Adam;

static Adam adam_at(uint64_t t) {
    double b1 = 0.9, b2 = 0.999;
    Adam p = {1e-3f, (float)b1, (float)(1.0 - b1), (float)b2, (float)(1.0 - b2), 1e-8f, 0.0f,
              (float)(1.0 / (1.0 - pow(b1, (double)t))),
              (float)(1.0 / (1.0 - pow(b2, (double)t)))};
    return p;
}

/* reference::adam::update_element, coupled decay, no amsgrad. */
static void adam_chunk(const Adam *restrict q, float *restrict theta, const float *restrict g,
                       float *restrict m, float *restrict v, size_t n) {
    const Adam p = *q;
    for (size_t i = 0; i < n; i++) {
        float th = theta[i];
        float gi = g[i] + p.weight_decay * th;
        float m_new = p.beta1 * m[i] + p.one_minus_beta1 * gi;
        float v_new = p.beta2 * v[i] + p.one_minus_beta2 * (gi * gi);
        m[i] = m_new;
        v[i] = v_new;
        theta[i] = th - p.lr * (m_new * p.c1) / (sqrtf(v_new * p.c2) + p.eps);
    }
}

typedef struct {
    int bayes;
    size_t n;
    float *theta, *grad, *a, *b, *copy;
} Arrays;

/* Updates one chunk, leaving elements with a non-finite gradient as they were. */
static void step_chunk(const Arrays *x, const void *p, size_t start, size_t len) {
    float *th = x->theta + start, *a = x->a + start, *b = x->b + start;
    const float *g = x->grad + start;
    if (count_nonfinite(g, len) == 0) {
        if (x->bayes) bayes_chunk(p, th, g, a, b, len);
        else adam_chunk(p, th, g, a, b, len);
        return;
    }
    for (size_t i = 0; i < len; i++) { /* the rare chunk: element by element */
        if (nonfinite(g[i])) continue;
        if (x->bayes) bayes_chunk(p, th + i, g + i, a + i, b + i, 1);
        else adam_chunk(p, th + i, g + i, a + i, b + i, 1);
    }
}

static void step(const Arrays *x, uint64_t t) {
    Bayes pb = bayes_at(t);
    Adam pa = adam_at(t);
    const void *p = x->bayes ? (const void *)&pb : (const void *)&pa;
    size_t chunks = (x->n + CHUNK - 1) / CHUNK;
    /* dynamic: rayon's work stealing hands chunks to whichever thread is free */
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t c = 0; c < chunks; c++) {
        size_t start = c * CHUNK, len = x->n - start < CHUNK ? x->n - start : CHUNK;
        step_chunk(x, p, start, len);
    }
}

/* roofline::touch_cpu with two state vectors: the roofline bench measures after each step. */
static void touch(const Arrays *x) {
    size_t chunks = (x->n + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t c = 0; c < chunks; c++) {
        size_t start = c * CHUNK, len = x->n - start < CHUNK ? x->n - start : CHUNK;
        float *restrict th = x->theta + start, *restrict a = x->a + start,
                        *restrict b = x->b + start;
        const float *restrict g = x->grad + start;
        for (size_t i = 0; i < len; i++) {
            float d = 1e-6f * g[i];
            th[i] += d;
            a[i] += d;
            b[i] += d;
        }
    }
}

/* roofline::copy_cpu, which bench runs after the touch. */
static void copy(const Arrays *x) {
    size_t chunks = (x->n + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t c = 0; c < chunks; c++) {
        size_t start = c * CHUNK, len = x->n - start < CHUNK ? x->n - start : CHUNK;
        memcpy(x->copy + start, x->theta + start, len * sizeof(float));
    }
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, n, sizeof(double), by_value);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int main(int argc, char **argv) {
    if (argc != 4 || (strcmp(argv[1], "bayes") && strcmp(argv[1], "adam"))) {
        fprintf(stderr, "usage: %s bayes|adam N STEPS\n", argv[0]);
        return 2;
    }
    Arrays x;
    x.bayes = strcmp(argv[1], "bayes") == 0;
    x.n = strtoull(argv[2], NULL, 10);
    int steps = atoi(argv[3]);
    if (x.n == 0 || steps < 1) {
        fprintf(stderr, "N and STEPS must be positive\n");
        return 2;
    }
    /* bench's arrays: θ₀ = synthetic(n, 1, 1), g = synthetic(n, 2, 1e-2), zero state (σ = 0:
     * sigma_init = fixed_point). */
    x.theta = array(x.n, 0.0f);
    x.grad = array(x.n, 0.0f);
    synthetic(x.theta, x.n, 1, 1.0f);
    synthetic(x.grad, x.n, 2, 1e-2f);
    x.a = array(x.n, 0.0f);
    x.b = array(x.n, 0.0f);
    x.copy = array(x.n, 0.0f);
    uint64_t t = 1;
    step(&x, t++); /* warm-up, as bench's */
    touch(&x);
    copy(&x);
    double *step_s = malloc(steps * sizeof(double)), *touch_s = malloc(steps * sizeof(double));
    for (int k = 0; k < steps; k++) {
        double start = now();
        step(&x, t++);
        step_s[k] = now() - start;
        start = now();
        touch(&x);
        touch_s[k] = now() - start;
        copy(&x);
    }
    double checksum = 0;
    for (size_t i = 0; i < x.n; i += 4099) checksum += x.theta[i];
    printf("%s %zu %d %.6f %.6f %.9g\n", argv[1], x.n, omp_get_max_threads(),
           median(step_s, steps), median(touch_s, steps), checksum);
    return 0;
}
