// optim.c — the optimizers' update, mnc_optimizer_update_f32 (the formulas and their
// rounding are the contract in mnistc.h), also in slices for the training step's region
// (internal.h). The element loops are
// written once (update_block) and compiled three times, for the baseline ISA and under
// AVX2 and AVX-512 target attributes, so the compiler vectorises each for its width.
// With no FMA contraction (-ffp-contract=off) every version rounds each operation alike.
#include <math.h>

#include "internal.h"

// Elements per thread below which a second thread costs more than it saves.
enum { MIN_ELEMENTS_PER_THREAD = 1 << 14 };
// Floats per 64-byte cache line: slices start on a line of params, so no two threads
// write one line.
enum { LINE_FLOATS = 16 };
// Elements per block: the EMA reads a block of params just after it was written, from L1.
enum { BLOCK = 1024 };

#if defined(__GNUC__)
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define ALWAYS_INLINE static __forceinline
#endif

// torch's lerp(a, b, w) in float32 (ATen's Lerp.h): a + w·(b − a) when |w| < 0.5, else
// b − (1 − w)·(b − a); `small` and `rest` = 1 − w are the caller's, computed once.
static mnc_lerp_weight make_lerp_weight(double w) {
    mnc_lerp_weight l = {0, (float)w, 0.0f};
    l.small = fabsf(l.w) < 0.5f;
    l.rest = 1.0f - l.w;
    return l;
}

ALWAYS_INLINE float lerp(float a, float b, mnc_lerp_weight l) {
    float t = b - a;
    return l.small ? a + l.w * t : b - l.rest * t;
}

mnc_optim_step mnc_optim_prepare(const mnc_optimizer *o, double lr, int64_t step,
                                 double ema_decay) {
    mnc_optim_step s = {0};
    int adam = o->kind == MNC_OPT_ADAM || o->kind == MNC_OPT_ADAMW;
    s.kind = o->kind;
    s.l2 = o->weight_decay != 0.0 && o->kind != MNC_OPT_ADAMW;
    s.first = step <= 1;
    s.lr = (float)lr;
    s.weight_decay = (float)o->weight_decay;
    s.momentum = (float)o->momentum;
    if (adam) {
        double t = (double)step;
        s.m = make_lerp_weight(1.0 - o->beta1);
        s.beta2 = (float)o->beta2;
        s.c2 = (float)(1.0 - o->beta2);
        s.step_size = (float)(lr / (1.0 - pow(o->beta1, t)));
        s.bc2_sqrt = (float)pow(1.0 - pow(o->beta2, t), 0.5);
        s.eps = (float)o->eps;
    }
    s.decay = o->kind == MNC_OPT_ADAMW ? (float)(1.0 - lr * o->weight_decay) : 1.0f;
    s.ema = make_lerp_weight(1.0 - ema_decay);
    return s;
}

// The update of n <= BLOCK elements, then their EMA. The flags are loop-invariant, so
// the compiler hoists them out of the vector loops; the arrays never overlap (the
// contract), which the compiler checks once per loop before taking the vector code.
ALWAYS_INLINE void update_block(const mnc_optim_step *sp, float *p, float *s0, float *s1, float *e,
                                const float *g, int64_t n) {
    const mnc_optim_step s = *sp;
    switch (s.kind) {
        case MNC_OPT_SGD:
            for (int64_t i = 0; i < n; i++) {
                float pi = p[i], gi = g[i];
                if (s.l2) gi = gi + s.weight_decay * pi;
                p[i] = pi - s.lr * gi;
            }
            break;
        case MNC_OPT_MOMENTUM:
        case MNC_OPT_NESTEROV: {
            const int nesterov = s.kind == MNC_OPT_NESTEROV;
            for (int64_t i = 0; i < n; i++) {
                float pi = p[i], gi = g[i], bi = s0[i];
                if (s.l2) gi = gi + s.weight_decay * pi;
                bi = s.first ? gi : s.momentum * bi + gi;
                s0[i] = bi;
                p[i] = pi - s.lr * (nesterov ? gi + s.momentum * bi : bi);
            }
            break;
        }
        case MNC_OPT_ADAM:
        case MNC_OPT_ADAMW:
            for (int64_t i = 0; i < n; i++) {
                float pi = p[i] * s.decay, gi = g[i];
                if (s.l2) gi = gi + s.weight_decay * pi;
                float mi = lerp(s0[i], gi, s.m);
                float vi = s.beta2 * s1[i] + (s.c2 * gi) * gi;
                s0[i] = mi;
                s1[i] = vi;
                p[i] = pi - (s.step_size * mi) / (sqrtf(vi) / s.bc2_sqrt + s.eps);
            }
            break;
    }
    if (e != NULL)
        for (int64_t i = 0; i < n; i++) e[i] = lerp(e[i], p[i], s.ema);
}

// Elements [0, n) of the arrays (s0, s1, e may be NULL when unused), block by block.
ALWAYS_INLINE void update_range(const mnc_optim_step *s, float *p, float *s0, float *s1, float *e,
                                const float *g, int64_t n) {
    for (int64_t at = 0; at < n; at += BLOCK) {
        int64_t len = n - at < BLOCK ? n - at : BLOCK;
        update_block(s, p + at, s0 ? s0 + at : NULL, s1 ? s1 + at : NULL, e ? e + at : NULL, g + at,
                     len);
    }
}

static void update_generic(const mnc_optim_step *s, float *p, float *s0, float *s1, float *e,
                           const float *g, int64_t n) {
    update_range(s, p, s0, s1, e, g, n);
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define OPTIM_X86 1
__attribute__((target("avx2"))) static void update_avx2(const mnc_optim_step *s, float *p,
                                                        float *s0, float *s1, float *e,
                                                        const float *g, int64_t n) {
    update_range(s, p, s0, s1, e, g, n);
}

__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"))) static void update_avx512(
    const mnc_optim_step *s, float *p, float *s0, float *s1, float *e, const float *g, int64_t n) {
    update_range(s, p, s0, s1, e, g, n);
}
#endif

// Where slice t of `team` starts: the first slice takes the elements before params' first
// cache-line boundary, and the lines are shared out evenly.
static int64_t slice_start(const float *params, int64_t n, int team, int t) {
    const int64_t lead =
        (int64_t)((LINE_FLOATS - ((uintptr_t)params / sizeof(float)) % LINE_FLOATS) % LINE_FLOATS);
    if (t == 0) return 0;
    if (t >= team) return n;
    int64_t lines = (n - lead + LINE_FLOATS - 1) / LINE_FLOATS;
    int64_t at = lead + lines * t / team * LINE_FLOATS;
    return at < n ? at : n;
}

// Elements [0, n) on the target in use.
static void update_on_target(const mnc_optim_step *s, float *p, float *s0, float *s1, float *e,
                             const float *g, int64_t n) {
#ifdef OPTIM_X86
    const mnc_isa isa = mnc_isa_active();
    if (isa == MNC_ISA_AVX512) update_avx512(s, p, s0, s1, e, g, n);
    else if (isa == MNC_ISA_AVX2) update_avx2(s, p, s0, s1, e, g, n);
    else
#endif
        update_generic(s, p, s0, s1, e, g, n);
}

void mnc_optim_update_part(const mnc_optim_step *s, float *params, float *state0, float *state1,
                           float *ema, const float *grads, int64_t n, int part, int parts) {
    int64_t lo = slice_start(params, n, parts, part), hi = slice_start(params, n, parts, part + 1);
    if (lo >= hi) return;
    update_on_target(s, params + lo, state0 ? state0 + lo : NULL, state1 ? state1 + lo : NULL,
                     ema ? ema + lo : NULL, grads + lo, hi - lo);
}

void mnc_optimizer_update_f32(const mnc_optimizer *opt, float *params, float *state0, float *state1,
                              float *ema, const float *grads, int64_t n, double lr, int64_t step,
                              double ema_decay, int n_threads) {
    if (n <= 0) return;
    const mnc_optim_step s = mnc_optim_prepare(opt, lr, step, ema_decay);
    const int team = mnc_team_size(n_threads, n, MIN_ELEMENTS_PER_THREAD);
    if (team == 1) {  // no parallel region at all: its fixed cost is most of a small update
        update_on_target(&s, params, state0, state1, ema, grads, n);
        return;
    }
#pragma omp parallel for num_threads(team) schedule(static, 1)
    for (int t = 0; t < team; t++)
        mnc_optim_update_part(&s, params, state0, state1, ema, grads, n, t, team);
}
