// nn_math.h — mnistc's own float32 exp and log for the softmax cross-entropy, so the loss
// and its gradient do not depend on the C library. The scalar functions here are the
// definition; nn_simd.h computes the same operations in the same order on 8 or 16 rows
// at a time, so all give the same bits (tested). Files that include this must not be
// built with -ffast-math or FP contraction: every rounding step below is deliberate.
#ifndef MNISTC_NN_MATH_H
#define MNISTC_NN_MATH_H

#include <stdint.h>

// exp: x = n ln2 + r with ln2 split in two (Cody-Waite) so that r is exact; exp(r) by
// Cephes' degree-6 polynomial.
#define NN_EXP_MIN -103.0f  // below: exp underflows to 0
#define NN_LOG2E 1.44269504088896341f
#define NN_ROUND_MAGIC 12582912.0f  // 1.5 * 2^23: (x + it) - it rounds x to an integer
#define NN_LN2_HI 0.693359375f
#define NN_LN2_LO -2.12194440e-4f
#define NN_EXP_P0 1.9875691500e-4f
#define NN_EXP_P1 1.3981999507e-3f
#define NN_EXP_P2 8.3334519073e-3f
#define NN_EXP_P3 4.1665795894e-2f
#define NN_EXP_P4 1.6666665459e-1f
#define NN_EXP_P5 5.0000001201e-1f

// log: x = 2^e m with m in [sqrt(1/2), sqrt(2)); log(m) by Cephes' polynomial in m - 1.
#define NN_FLOAT_MAX 3.4028235e38f
#define NN_SQRT_HALF 0.707106781186547524f
#define NN_LOG_P0 7.0376836292e-2f
#define NN_LOG_P1 -1.1514610310e-1f
#define NN_LOG_P2 1.1676998740e-1f
#define NN_LOG_P3 -1.2420140846e-1f
#define NN_LOG_P4 1.4249322787e-1f
#define NN_LOG_P5 -1.6668057665e-1f
#define NN_LOG_P6 2.0000714765e-1f
#define NN_LOG_P7 -2.4999993993e-1f
#define NN_LOG_P8 3.3333331174e-1f

// The two polynomials (Horner, one multiply and one add per coefficient), written once
// over the caller's MUL, ADD and NUM (a constant): the scalar functions below and the
// SIMD versions in nn_simd.h expand the same recipe, so they round the same way in the
// same order.
#define NN_EXP_POLY(p, r, MUL, ADD, NUM)      \
    do {                                      \
        (p) = NUM(NN_EXP_P0);                 \
        (p) = ADD(MUL(p, r), NUM(NN_EXP_P1)); \
        (p) = ADD(MUL(p, r), NUM(NN_EXP_P2)); \
        (p) = ADD(MUL(p, r), NUM(NN_EXP_P3)); \
        (p) = ADD(MUL(p, r), NUM(NN_EXP_P4)); \
        (p) = ADD(MUL(p, r), NUM(NN_EXP_P5)); \
    } while (0)
#define NN_LOG_POLY(y, m, MUL, ADD, NUM)      \
    do {                                      \
        (y) = NUM(NN_LOG_P0);                 \
        (y) = ADD(MUL(y, m), NUM(NN_LOG_P1)); \
        (y) = ADD(MUL(y, m), NUM(NN_LOG_P2)); \
        (y) = ADD(MUL(y, m), NUM(NN_LOG_P3)); \
        (y) = ADD(MUL(y, m), NUM(NN_LOG_P4)); \
        (y) = ADD(MUL(y, m), NUM(NN_LOG_P5)); \
        (y) = ADD(MUL(y, m), NUM(NN_LOG_P6)); \
        (y) = ADD(MUL(y, m), NUM(NN_LOG_P7)); \
        (y) = ADD(MUL(y, m), NUM(NN_LOG_P8)); \
    } while (0)

// The scalar operations for the recipes.
#define NN_MUL(x, y) ((x) * (y))
#define NN_ADD(x, y) ((x) + (y))
#define NN_NUM(c) (c)

// exp(x) for x <= 0 (the softmax only needs that range), ~1 ulp. No libm call: n is
// rounded with the magic-number trick, exact in the default rounding mode for
// |x log2(e)| < 2^22, so the code is branch-light and the same everywhere.
static inline float nn_exp_nonpositive(float x) {
    if (!(x >= NN_EXP_MIN)) return x != x ? x : 0.0f;  // NaN propagates; underflow to 0
    float n = (x * NN_LOG2E + NN_ROUND_MAGIC) - NN_ROUND_MAGIC;
    float r = x - n * NN_LN2_HI;
    r = r - n * NN_LN2_LO;
    float p;
    NN_EXP_POLY(p, r, NN_MUL, NN_ADD, NN_NUM);
    p = p * r * r + r + 1.0f;
    // p * 2^n without overflow in the exponent field: n >= -149 here, so split it.
    int e = (int)n;
    if (e < -126) {
        p *= 0x1p-24f;
        e += 24;
    }
    union {
        float f;
        uint32_t u;
    } scale = {.u = (uint32_t)(e + 127) << 23};
    return p * scale.f;
}

// log(x) for finite x >= 1 (the sum of exps around the row maximum), ~1 ulp.
static inline float nn_log_ge1(float x) {
    if (!(x <= NN_FLOAT_MAX)) return x;  // NaN and +inf propagate
    union {
        float f;
        uint32_t u;
    } v = {.f = x};
    int e = (int)((v.u >> 23) & 0xff) - 126;
    v.u = (v.u & 0x807fffffu) | (126u << 23);  // mantissa m in [0.5, 1)
    float m = v.f;
    if (m < NN_SQRT_HALF) {
        e -= 1;
        m = m + m - 1.0f;
    } else {
        m = m - 1.0f;
    }
    float z = m * m;
    float y;
    NN_LOG_POLY(y, m, NN_MUL, NN_ADD, NN_NUM);
    y = y * m * z;
    float fe = (float)e;
    y += fe * NN_LN2_LO;
    y += -0.5f * z;
    return m + y + fe * NN_LN2_HI;
}

#endif  // MNISTC_NN_MATH_H
