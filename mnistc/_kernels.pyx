# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Thin bindings to mnistc's C kernels (csrc/mnistc.h).

Each wrapper checks dtype, shape and contiguity and raises TypeError/ValueError naming
the argument at fault; the arithmetic is all in C, called with the GIL released. This
module holds no model logic: mnistc.model drives it.

The checks and data pointers go through NumPy's C API (a flag test each) rather than
Python attribute lookups and typed memoryviews: a call's fixed cost is most of the time
of the model's smallest GEMMs (100 x 10 x 32), and this keeps it to a few flag tests.

The CPU target comes from C (MNISTC_ISA is read there, once): when MNISTC_ISA names no
target, every function that runs a kernel or reports the target raises ValueError.
"""
import math
import numbers
import operator

import numpy as np

cimport numpy as cnp
from libc.float cimport DBL_MAX
from libc.stdint cimport int32_t, int64_t, uint8_t

cnp.import_array()


cdef extern from "mnistc.h" nogil:
    ctypedef enum mnc_isa:
        MNC_ISA_GENERIC
        MNC_ISA_AVX2
        MNC_ISA_AVX512
    int MNC_ISA_COUNT
    mnc_isa mnc_isa_supported()
    mnc_isa mnc_isa_active()
    const char *mnc_isa_env_invalid()
    mnc_isa mnc_isa_set(mnc_isa isa)
    const char *mnc_isa_name(mnc_isa isa)
    int mnc_isa_from_name(const char *name)
    int mnc_openmp_enabled()
    int mnc_max_threads()
    double mnc_fma_peak_gflops(int n_threads, double seconds)
    int MNC_GEMM_KC
    int MNC_PANEL

    ctypedef struct mnc_epilogue:
        const float *bias
        int relu
        const float *relu_mask
        int64_t ld_mask
    void mnc_sgemm_f32(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                       float alpha, const float *a, int64_t lda, const float *b,
                       int64_t ldb, float beta, float *c, int64_t ldc,
                       const mnc_epilogue *epilogue, int n_threads)

    void mnc_bias_relu_f32(float *y, const float *x, const float *bias,
                           int64_t m, int64_t n, int n_threads)
    void mnc_relu_backward_f32(float *dx, const float *dy, const float *y,
                               int64_t m, int64_t n, int n_threads)
    void mnc_colsum_axpy_f32(float *out, const float *x, int64_t m, int64_t n,
                             float alpha, float beta, int n_threads)
    int mnc_softmax_xent_f32(float *dlogits, float *row_loss, double *mean_loss,
                             const float *logits, const int32_t *labels,
                             int64_t m, int64_t n, float grad_scale,
                             float label_smoothing, int n_threads)
    int mnc_in_top_k_f32(uint8_t *correct, int64_t *n_correct, const float *logits,
                         const int32_t *labels, int64_t m, int64_t n, int64_t k,
                         int n_threads)
    void mnc_gather_scale_u8(float *x, int32_t *y, const uint8_t *images,
                             const uint8_t *labels, const int32_t *idx,
                             int64_t m, int64_t d, float scale, int n_threads)

    ctypedef enum mnc_optimizer_kind:
        MNC_OPT_SGD
        MNC_OPT_MOMENTUM
        MNC_OPT_NESTEROV
        MNC_OPT_ADAM
        MNC_OPT_ADAMW
    ctypedef struct mnc_optimizer:
        mnc_optimizer_kind kind
        double momentum
        double beta1
        double beta2
        double eps
        double weight_decay
    void mnc_optimizer_update_f32(const mnc_optimizer *opt, float *params, float *state0,
                                  float *state1, float *ema, const float *grads, int64_t n,
                                  double lr, int64_t step, double ema_decay, int n_threads)

    ctypedef struct mnc_mlp:
        int n_layers
        const int64_t *sizes
        float **weights
        float **biases
        int first_in_panels
    ctypedef struct mnc_mlp_buffers:
        int64_t batch
        float *input
        int32_t *labels
        float **activations
        float **grads
        float *row_loss
    ctypedef struct mnc_mlp_optimizer:
        mnc_optimizer settings
        int64_t n
        float *params
        float *grads
        float *state0
        float *state1
    int mnc_mlp_train_step(const mnc_mlp *net, const mnc_mlp_buffers *buf,
                           const uint8_t *images, const uint8_t *labels,
                           const int32_t *idx, int64_t m, int64_t image_size, float scale,
                           float label_smoothing, const mnc_mlp_optimizer *opt, double lr,
                           int64_t step, double *loss, int n_threads)
    int mnc_mlp_evaluate(const mnc_mlp *net, const mnc_mlp_buffers *buf,
                         const uint8_t *images, const uint8_t *labels, int64_t m,
                         int64_t image_size, float scale, int64_t k,
                         int64_t *n_correct, float *logits_out, int n_threads)

cdef extern from "stdlib.h" nogil:
    void *calloc(size_t n, size_t size)
    void free(void *p)


# ----------------------------------------------------------------------------------
# Targets and threads

# uint8 pixel -> float32 input: a multiply by 1/255 rounded to float32, as TensorFlow's
# astype(float32) * (1/255); the default `scale` of the kernels that read images.
PIXEL_SCALE = 1.0 / 255.0

ISA_NAMES = tuple(mnc_isa_name(<mnc_isa>i).decode() for i in range(MNC_ISA_COUNT))
"""The CPU targets, most portable first: the values of MNISTC_ISA and set_isa."""

GEMM_KC = MNC_GEMM_KC
"""The reduction block of the GEMM's rounding contract (mnistc.h)."""

PANEL = MNC_PANEL
"""The width of the column panels a first layer's weights may be stored in (mnistc.h)."""


def to_panels(w):
    """W [k, n] as MLPKernel stores a first layer in panels: columns [PANEL q, PANEL (q + 1))
    (the last panel the rest) as a row-major [k, width] matrix, the panels one after
    another; a new 1-D float32 array of k * n values."""
    w = np.asarray(w, np.float32)
    return np.concatenate([w[:, j : j + PANEL].ravel() for j in range(0, w.shape[1], PANEL)])


def from_panels(flat, k, n):
    """The [k, n] matrix whose panels (to_panels) `flat` holds; a new array."""
    out = np.empty((k, n), np.float32)
    for j in range(0, n, PANEL):
        width = min(PANEL, n - j)
        out[:, j : j + width] = flat[j * k : (j + width) * k].reshape(k, width)
    return out

cdef bint _isa_env_ok = False


cdef int _check_isa_env() except -1:
    """Raises ValueError when MNISTC_ISA names no target; once it has passed, _threads
    and the functions below only test _isa_env_ok."""
    global _isa_env_ok
    cdef const char *bad = mnc_isa_env_invalid()
    if bad != NULL:
        raise ValueError(f"MNISTC_ISA={bad.decode(errors='replace')!r} is not one of "
                         f"{', '.join(ISA_NAMES)}")
    _isa_env_ok = True
    return 0


def isa_supported():
    """The best CPU target this machine and OS support: 'generic', 'avx2' or 'avx512'
    (whatever MNISTC_ISA says)."""
    return mnc_isa_name(mnc_isa_supported()).decode()


def isa_active():
    """The CPU target the kernels use now."""
    if not _isa_env_ok:
        _check_isa_env()
    return mnc_isa_name(mnc_isa_active()).decode()


def set_isa(name):
    """Cap the CPU target at `name` (one of ISA_NAMES); returns the target in use, which
    is lower than `name` when the machine lacks it."""
    if not _isa_env_ok:
        _check_isa_env()
    cdef int isa = mnc_isa_from_name(name.encode()) if isinstance(name, str) else -1
    if isa < 0:
        raise ValueError(f"unknown CPU target {name!r}; expected one of {', '.join(ISA_NAMES)}")
    return mnc_isa_name(mnc_isa_set(<mnc_isa>isa)).decode()


def openmp_enabled():
    """True when the extension was built with OpenMP."""
    return bool(mnc_openmp_enabled())


def max_threads():
    """Threads a kernel uses when n_threads <= 0 (OpenMP's default)."""
    return mnc_max_threads()


def fma_peak(seconds=0.1, n_threads=None):
    """This machine's FP32 multiply-add peak in GFLOP/s on the active target's widest
    vectors: n_threads threads (None: max_threads()) each run independent chains for
    `seconds` (at most 10), and their rates are summed. bench/ states speeds as a
    fraction of it, measured in the same session."""
    cdef int nt = _threads(n_threads)
    cdef double s
    try:
        s = seconds
    except TypeError:
        raise TypeError(f"seconds must be a number, not {type(seconds).__name__}") from None
    if not 0.0 < s <= 10.0:
        raise ValueError(f"seconds must be in (0, 10], got {seconds!r}")
    cdef double gflops
    with nogil:
        gflops = mnc_fma_peak_gflops(nt, s)
    return gflops


# ----------------------------------------------------------------------------------
# Argument checks: every message names the argument and what is wrong with it.

cdef enum:
    F32 = cnp.NPY_FLOAT32
    I32 = cnp.NPY_INT32
    U8 = cnp.NPY_UINT8


cdef cnp.ndarray _array(str name, object x, int typenum, int ndim):
    """x, checked to be an ndarray of dtype typenum (native byte order), ndim-D,
    C-contiguous and aligned: its data pointer can go to C as is."""
    if not cnp.PyArray_Check(x):
        raise TypeError(f"{name} must be a numpy.ndarray, not {type(x).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray>x
    # EquivTypenums: int32 is NPY_INT on some platforms and NPY_LONG on others.
    if not cnp.PyArray_EquivTypenums(cnp.PyArray_TYPE(arr), typenum) or \
            not cnp.PyArray_ISNOTSWAPPED(arr):
        raise TypeError(f"{name} must have dtype {cnp.PyArray_DescrFromType(typenum)}, "
                        f"not {x.dtype}")
    if cnp.PyArray_NDIM(arr) != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {x.shape}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        raise ValueError(f"{name} must be C-contiguous (use numpy.ascontiguousarray)")
    if not cnp.PyArray_ISALIGNED(arr):
        raise ValueError(f"{name} must be aligned to its dtype (copy it with numpy.array)")
    return arr


cdef cnp.ndarray _output(str name, object out, Py_ssize_t rows, Py_ssize_t cols=-1,
                         int typenum=F32):
    """out, checked to be writeable with shape (rows, cols), or (rows,) when cols < 0;
    a new array when out is None."""
    cdef int ndim = 1 if cols < 0 else 2
    cdef cnp.npy_intp dims[2]
    dims[0], dims[1] = rows, cols
    if out is None:
        return cnp.PyArray_EMPTY(ndim, dims, typenum, 0)
    cdef cnp.ndarray arr = _array(name, out, typenum, ndim)
    if cnp.PyArray_DIM(arr, 0) != rows or (ndim == 2 and cnp.PyArray_DIM(arr, 1) != cols):
        shape = (rows,) + ((cols,) if ndim == 2 else ())
        raise ValueError(f"{name} must have shape {shape}, got {out.shape}")
    if not cnp.PyArray_ISWRITEABLE(arr):
        raise ValueError(f"{name} must be writeable")
    return arr


def aligned_zeros(shape, dtype=np.float32):
    """A C-contiguous array of zeros whose data starts on a 64-byte cache line. NumPy's
    large arrays start 16 bytes into one (the allocator's header), so every vector load
    of a row the kernels stream straddles two lines; the model's parameters and the
    training step's buffers are allocated here instead."""
    dtype = np.dtype(dtype)
    count = math.prod(shape) if isinstance(shape, tuple) else operator.index(shape)
    raw = np.zeros(count * dtype.itemsize + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start : start + count * dtype.itemsize].view(dtype).reshape(shape)


cdef inline float *_f32(cnp.ndarray x) noexcept:
    return <float *>cnp.PyArray_DATA(x)


cdef inline uint8_t *_u8(cnp.ndarray x) noexcept:
    return <uint8_t *>cnp.PyArray_DATA(x)


cdef inline int32_t *_i32(cnp.ndarray x) noexcept:
    return <int32_t *>cnp.PyArray_DATA(x)


cdef cnp.ndarray _labels(object labels, Py_ssize_t m):
    """labels as a C-contiguous int32 array of shape (m,): any integer dtype that fits."""
    if not isinstance(labels, np.ndarray):
        raise TypeError(f"labels must be a numpy.ndarray, not {type(labels).__name__}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must have an integer dtype, not {labels.dtype}")
    if labels.shape != (m,):
        raise ValueError(f"labels must have shape ({m},), got {labels.shape}")
    if labels.dtype.itemsize > 4 and m and (labels.min() < -2**31 or labels.max() >= 2**31):
        raise ValueError("labels must fit in int32")
    return np.ascontiguousarray(labels, dtype=np.int32)


cdef int _threads(object n_threads) except? -1:
    """n_threads as the C kernels take it (None: 0, all threads). Every wrapper that runs
    a kernel calls this, so it is also where a bad MNISTC_ISA stops them."""
    if not _isa_env_ok:
        _check_isa_env()
    if n_threads is None:
        return 0
    cdef int nt
    try:
        nt = n_threads
    except TypeError:
        raise TypeError(f"n_threads must be an int or None, not {n_threads!r}") from None
    except OverflowError:
        raise ValueError(f"n_threads is out of range: {n_threads}") from None
    if nt < 0:
        raise ValueError(f"n_threads must be >= 0, got {n_threads}")
    return nt


cdef object _bad_label(int status, object labels, Py_ssize_t n):
    cdef Py_ssize_t row = -1 - status
    return ValueError(f"labels[{row}] = {labels[row]} is outside [0, {n})")


cdef _check_dataset(object images, object labels):
    cdef cnp.ndarray im = _array("images", images, U8, 2)
    cdef cnp.ndarray lab = _array("labels", labels, U8, 1)
    if cnp.PyArray_DIM(lab, 0) != cnp.PyArray_DIM(im, 0):
        raise ValueError(f"labels has {labels.shape[0]} rows but images has {images.shape[0]}")


cdef cnp.ndarray _check_indices(object idx, Py_ssize_t n_rows):
    cdef cnp.ndarray arr = _array("idx", idx, I32, 1)
    cdef const int32_t *iv = _i32(arr)
    cdef Py_ssize_t i
    for i in range(cnp.PyArray_DIM(arr, 0)):
        if iv[i] < 0 or iv[i] >= n_rows:
            raise ValueError(f"idx[{i}] = {iv[i]} is outside [0, {n_rows})")
    return arr


# ----------------------------------------------------------------------------------
# Kernels

def sgemm(a, b, c=None, *, trans_a=False, trans_b=False, float alpha=1.0,
          float beta=0.0, bias=None, relu=False, relu_mask=None, n_threads=None):
    """C := epilogue(alpha * op(A) @ op(B) + beta * C), float32, row-major.

    op(X) is X.T when trans_x. With c=None a new array is returned (beta must be 0).
    Epilogue: + bias[j], then ReLU (relu=True), then zero where relu_mask <= 0.
    """
    cdef cnp.ndarray av = _array("a", a, F32, 2), bv = _array("b", b, F32, 2)
    cdef int ta = 1 if trans_a else 0, tb = 1 if trans_b else 0
    cdef Py_ssize_t m = cnp.PyArray_DIM(av, ta), k = cnp.PyArray_DIM(av, 1 - ta)
    cdef Py_ssize_t kb = cnp.PyArray_DIM(bv, tb), n = cnp.PyArray_DIM(bv, 1 - tb)
    if k != kb:
        raise ValueError(f"inner dimensions differ: op(a) is {m}x{k}, op(b) is {kb}x{n}")
    if c is None and beta != 0.0:
        raise ValueError("beta != 0 needs an existing c")
    cdef cnp.ndarray cv = _output("c", c, m, n), v
    cdef mnc_epilogue ep
    ep.bias = NULL
    ep.relu = 1 if relu else 0
    ep.relu_mask = NULL
    ep.ld_mask = n
    if bias is not None:
        v = _array("bias", bias, F32, 1)
        if cnp.PyArray_DIM(v, 0) != n:
            raise ValueError(f"bias must have shape ({n},), got {bias.shape}")
        ep.bias = _f32(v)
    if relu_mask is not None:
        v = _array("relu_mask", relu_mask, F32, 2)
        if cnp.PyArray_DIM(v, 0) != m or cnp.PyArray_DIM(v, 1) != n:
            raise ValueError(f"relu_mask must have shape {(m, n)}, got {relu_mask.shape}")
        ep.relu_mask = _f32(v)
    if m == 0 or n == 0:
        return cv
    if k == 0:
        # An empty sum: apply alpha*0 + beta*C and the epilogue through the kernel's
        # own rules by using a 1-deep zero product.
        av = np.zeros((m, 1), np.float32)
        bv = np.zeros((1, n), np.float32)
        ta = tb = 0
        k = 1
    cdef int nt = _threads(n_threads)
    cdef mnc_epilogue *epp = &ep if (ep.bias != NULL or ep.relu or ep.relu_mask != NULL) else NULL
    cdef const float *pa = _f32(av)
    cdef const float *pb = _f32(bv)
    cdef float *pc = _f32(cv)
    cdef int64_t lda = cnp.PyArray_DIM(av, 1), ldb = cnp.PyArray_DIM(bv, 1)
    with nogil:
        mnc_sgemm_f32(ta, tb, m, n, k, alpha, pa, lda, pb, ldb, beta, pc, n, epp, nt)
    return cv


def bias_relu(x, bias, out=None, n_threads=None):
    """out = max(x + bias, 0) row by row (NaN stays NaN). out may be x."""
    cdef cnp.ndarray xv = _array("x", x, F32, 2), bv = _array("bias", bias, F32, 1)
    cdef Py_ssize_t m = cnp.PyArray_DIM(xv, 0), n = cnp.PyArray_DIM(xv, 1)
    if cnp.PyArray_DIM(bv, 0) != n:
        raise ValueError(f"bias must have shape ({n},), got {bias.shape}")
    cdef cnp.ndarray ov = _output("out", out, m, n)
    if m == 0 or n == 0:
        return ov
    cdef int nt = _threads(n_threads)
    cdef float *po = _f32(ov)
    cdef const float *px = _f32(xv)
    cdef const float *pb = _f32(bv)
    with nogil:
        mnc_bias_relu_f32(po, px, pb, m, n, nt)
    return ov


def relu_backward(dy, y, out=None, n_threads=None):
    """out = dy where y > 0 else 0 (y is the ReLU output). out may be dy."""
    cdef cnp.ndarray dyv = _array("dy", dy, F32, 2), yv = _array("y", y, F32, 2)
    cdef Py_ssize_t m = cnp.PyArray_DIM(dyv, 0), n = cnp.PyArray_DIM(dyv, 1)
    if cnp.PyArray_DIM(yv, 0) != m or cnp.PyArray_DIM(yv, 1) != n:
        raise ValueError(f"y must have the shape of dy {dy.shape}, got {y.shape}")
    cdef cnp.ndarray ov = _output("out", out, m, n)
    if m == 0 or n == 0:
        return ov
    cdef int nt = _threads(n_threads)
    cdef float *po = _f32(ov)
    cdef const float *pdy = _f32(dyv)
    cdef const float *py = _f32(yv)
    with nogil:
        mnc_relu_backward_f32(po, pdy, py, m, n, nt)
    return ov


def colsum_axpy(x, out=None, float alpha=1.0, float beta=0.0, n_threads=None):
    """out[j] = beta * out[j] + alpha * sum_i x[i, j] (fixed order). Returns out."""
    cdef cnp.ndarray xv = _array("x", x, F32, 2)
    cdef Py_ssize_t m = cnp.PyArray_DIM(xv, 0), n = cnp.PyArray_DIM(xv, 1)
    if out is None and beta != 0.0:
        raise ValueError("beta != 0 needs an existing out")
    cdef cnp.ndarray ov = _output("out", out, n)
    if n == 0:
        return ov
    if m == 0:
        ov[...] = ov * beta if beta != 0.0 else 0.0
        return ov
    cdef int nt = _threads(n_threads)
    cdef float *po = _f32(ov)
    cdef const float *px = _f32(xv)
    with nogil:
        mnc_colsum_axpy_f32(po, px, m, n, alpha, beta, nt)
    return ov


def softmax_xent(logits, labels, dlogits=None, grad_scale=None, *, gradient=True,
                 label_smoothing=0.0, n_threads=None):
    """Fused sparse softmax cross-entropy, with label smoothing ε (targets (1 - ε)·onehot +
    ε/n, torch's label_smoothing; 0 <= ε < 1).

    Returns (mean_loss, row_loss, dlogits): row_loss[i] = logsumexp(logits[i]) -
    Σ_j target[i, j] logits[i, j], dlogits = grad_scale * (softmax - target) (grad_scale
    defaults to 1/m, the gradient of the mean), or None when gradient=False.
    """
    cdef float smoothing = _check_label_smoothing(label_smoothing)
    cdef cnp.ndarray lv = _array("logits", logits, F32, 2)
    cdef Py_ssize_t m = cnp.PyArray_DIM(lv, 0), n = cnp.PyArray_DIM(lv, 1)
    if m == 0 or n == 0:
        raise ValueError(f"logits must be non-empty, got shape {logits.shape}")
    cdef cnp.ndarray lab = _labels(labels, m)
    cdef cnp.ndarray dv = _output("dlogits", dlogits, m, n) if gradient else None
    cdef cnp.ndarray row_loss = _output("row_loss", None, m)
    cdef float scale = (1.0 / m) if grad_scale is None else grad_scale
    cdef float *pd = _f32(dv) if gradient else NULL
    cdef float *pr = _f32(row_loss)
    cdef const float *pl = _f32(lv)
    cdef const int32_t *py = _i32(lab)
    cdef double mean = 0.0
    cdef int status
    cdef int nt = _threads(n_threads)
    with nogil:
        status = mnc_softmax_xent_f32(pd, pr, &mean, pl, py, m, n, scale, smoothing, nt)
    if status != 0:
        raise _bad_label(status, labels, n)
    return mean, row_loss, dv


def in_top_k(logits, labels, k=1, n_threads=None):
    """(n_correct, correct): TensorFlow's in_top_k — ties count as hits, a non-finite
    target logit never does."""
    cdef cnp.ndarray lv = _array("logits", logits, F32, 2)
    cdef Py_ssize_t m = cnp.PyArray_DIM(lv, 0), n = cnp.PyArray_DIM(lv, 1)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    cdef cnp.ndarray lab = _labels(labels, m)
    correct = np.zeros(m, np.uint8)
    if m == 0:
        return 0, correct.astype(bool)
    if n == 0:
        raise ValueError("logits must have at least one column")
    cdef uint8_t *pc = _u8(correct)
    cdef const float *pl = _f32(lv)
    cdef const int32_t *py = _i32(lab)
    cdef int64_t hits = 0, kk = k
    cdef int status
    cdef int nt = _threads(n_threads)
    with nogil:
        status = mnc_in_top_k_f32(pc, &hits, pl, py, m, n, kk, nt)
    if status != 0:
        raise _bad_label(status, labels, n)
    return int(hits), correct.astype(bool)


def gather_scale(images, labels, idx, float scale=PIXEL_SCALE, n_threads=None):
    """(x, y): x = images[idx] * scale as float32 [len(idx), d], y = labels[idx] as int32."""
    _check_dataset(images, labels)
    cdef cnp.ndarray im = <cnp.ndarray>images, lab = <cnp.ndarray>labels
    cdef cnp.ndarray iv = _check_indices(idx, cnp.PyArray_DIM(im, 0))
    cdef Py_ssize_t m = cnp.PyArray_DIM(iv, 0), d = cnp.PyArray_DIM(im, 1)
    cdef cnp.ndarray x = _output("x", None, m, d), y = _output("y", None, m, -1, I32)
    if m == 0 or d == 0:
        y[:] = labels[idx]
        return x, y
    cdef float *px = _f32(x)
    cdef int32_t *py = _i32(y)
    cdef const uint8_t *pim = _u8(im)
    cdef const uint8_t *plab = _u8(lab)
    cdef const int32_t *pidx = _i32(iv)
    cdef int nt = _threads(n_threads)
    with nogil:
        mnc_gather_scale_u8(px, py, pim, plab, pidx, m, d, scale, nt)
    return x, y


# ----------------------------------------------------------------------------------
# Optimizers: one update over a flat parameter block (mnistc.h has the formulas).

# Each optimizer's state arrays, in the order the C update takes them.
OPTIMIZER_STATE = {
    "sgd": (),
    "momentum": ("momentum_buffer",),
    "nesterov": ("momentum_buffer",),
    "adam": ("exp_avg", "exp_avg_sq"),
    "adamw": ("exp_avg", "exp_avg_sq"),
}
_OPTIMIZER_KIND = {"sgd": MNC_OPT_SGD, "momentum": MNC_OPT_MOMENTUM,
                   "nesterov": MNC_OPT_NESTEROV, "adam": MNC_OPT_ADAM, "adamw": MNC_OPT_ADAMW}
# How error messages name each state array, and all of optimizer_update's arrays.
_STATE_LABELS = {kind: tuple(f"state[{i}] ({name})" for i, name in enumerate(names))
                 for kind, names in OPTIMIZER_STATE.items()}
_UPDATE_LABELS = {kind: ("params", "grads") + labels + ("ema",)
                  for kind, labels in _STATE_LABELS.items()}
# torch.optim's defaults, for a hyperparameter left out (optimizer_update's signature
# spells out the same).
_TORCH_DEFAULTS = {"momentum": 0.0, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
                   "weight_decay": 0.0}


cdef double _real(str name, object x) except? -1.0:
    """x as a double; TypeError naming `name` unless it is a real number (bools are not)."""
    if type(x) is float:  # without the slow ABC check below
        return <double>x
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be a real number, not {type(x).__name__}")
    try:
        return <double>x
    except OverflowError:
        raise ValueError(f"{name} is out of range: {x!r:.40}") from None


cdef int _in_range(str name, double x, double low, double high, bint open_low,
                   bint open_high) except -1:
    """ValueError naming `name` unless x is in the interval (NaN never is)."""
    if (x > low if open_low else x >= low) and (x < high if open_high else x <= high):
        return 0
    if high == DBL_MAX:
        raise ValueError(f"{name} must be finite and {'>' if open_low else '>='} {low:g}, "
                         f"got {x!r}")
    interval = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
    raise ValueError(f"{name} must be in {interval}, got {x!r}")


cdef mnc_optimizer _optimizer(object kind, object momentum, object beta1, object beta2,
                              object eps, object weight_decay) except *:
    """The checked C settings of optimizer `kind`: ValueError/TypeError naming the first
    bad one."""
    if not isinstance(kind, str) or kind not in _OPTIMIZER_KIND:
        raise ValueError(f"unknown optimizer {kind!r}; expected one of "
                         f"{', '.join(OPTIMIZER_STATE)}")
    cdef mnc_optimizer opt
    opt.kind = _OPTIMIZER_KIND[kind]
    opt.momentum = _real("momentum", momentum)
    opt.beta1 = _real("beta1", beta1)
    opt.beta2 = _real("beta2", beta2)
    opt.eps = _real("eps", eps)
    opt.weight_decay = _real("weight_decay", weight_decay)
    _in_range("momentum", opt.momentum, 0.0, 1.0, opt.kind == MNC_OPT_NESTEROV, True)
    _in_range("beta1", opt.beta1, 0.0, 1.0, False, True)
    _in_range("beta2", opt.beta2, 0.0, 1.0, False, True)
    _in_range("eps", opt.eps, 0.0, DBL_MAX, True, False)
    _in_range("weight_decay", opt.weight_decay, 0.0, DBL_MAX, False, False)
    return opt


cdef mnc_optimizer _optimizer_from(object kind, dict hyperparameters) except *:
    """_optimizer with the hyperparameters as keywords, torch's default for any left out."""
    for name in hyperparameters:
        if name not in _TORCH_DEFAULTS:
            raise TypeError(f"unknown optimizer setting {name!r}; expected one of "
                            f"{', '.join(_TORCH_DEFAULTS)}")
    h = {**_TORCH_DEFAULTS, **hyperparameters}
    return _optimizer(kind, h["momentum"], h["beta1"], h["beta2"], h["eps"],
                      h["weight_decay"])


def check_optimizer(kind, **hyperparameters):
    """Raise ValueError/TypeError naming the first bad setting of optimizer `kind`: the
    checks optimizer_update and MLPKernel.set_optimizer make. Ranges: 0 <= momentum < 1
    (> 0 for nesterov), 0 <= beta1, beta2 < 1, eps > 0, weight_decay >= 0, all finite."""
    _optimizer_from(kind, hyperparameters)


cdef int64_t _step(object step, int64_t minimum) except -1:
    cdef int64_t value
    if type(step) is not int:
        if isinstance(step, bool):
            raise TypeError("step must be an int, not bool")
        try:
            step = operator.index(step)
        except TypeError:
            raise TypeError(f"step must be an int, not {type(step).__name__}") from None
    if step < minimum or step >= 2**62:
        raise ValueError(f"step must be in [{minimum}, 2**62), got {step}")
    value = step
    return value


cdef int _check_lr(double lr) except -1:
    if not (0.0 <= lr <= DBL_MAX):
        raise ValueError(f"lr must be finite and >= 0, got {lr!r}")
    return 0


cdef float _check_label_smoothing(object value) except -1:
    cdef double eps
    try:
        eps = value
    except TypeError:
        raise TypeError(f"label_smoothing must be a number, not {value!r}") from None
    if not (0.0 <= eps < 1.0):
        raise ValueError(f"label_smoothing must be in [0, 1), got {value!r}")
    return <float>eps


cdef enum:
    MAX_UPDATE_ARRAYS = 5  # params, grads, two state arrays, ema


cdef struct byte_range:
    const char *start
    const char *end


cdef inline byte_range _bytes_of(cnp.ndarray a) noexcept:
    cdef byte_range r
    r.start = cnp.PyArray_BYTES(a)
    r.end = r.start + cnp.PyArray_NBYTES(a)
    return r


cdef int _check_disjoint(byte_range *ranges, int count, tuple labels) except -1:
    """ValueError naming the first two of the arrays (labels[i] spans ranges[i]) that
    share memory."""
    cdef int i, j
    for i in range(count):
        for j in range(i):
            if ranges[i].start < ranges[j].end and ranges[j].start < ranges[i].end:
                raise ValueError(f"{labels[j]} and {labels[i]} overlap; they must be "
                                 f"separate arrays")
    return 0


cdef int _state_arrays(object kind, object state, Py_ssize_t n, float **out,
                       byte_range *ranges) except -1:
    """Checks the state arrays `kind` needs ([n] float32, writeable): out[i] gets each
    data pointer (NULL for the unused), ranges[i] its bytes. Returns their count."""
    labels = _STATE_LABELS[kind]
    cdef Py_ssize_t count = len(labels), i
    if not isinstance(state, (tuple, list)) or len(state) != count:
        names = OPTIMIZER_STATE[kind]
        raise ValueError(f"state must be a tuple of {count} arrays for {kind} "
                         f"({', '.join(names) or 'none'}), got {state!r:.60}")
    out[0] = out[1] = NULL
    cdef cnp.ndarray arr
    for i in range(count):
        if state[i] is None:
            raise TypeError(f"{labels[i]} must be a numpy.ndarray, not None")
        arr = _output(labels[i], state[i], n)
        out[i] = _f32(arr)
        ranges[i] = _bytes_of(arr)
    return count


def optimizer_update(kind, params, grads, state=(), *, double lr, step, momentum=0.0,
                     beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, ema=None,
                     double ema_decay=0.0, n_threads=None):
    """One update of optimizer `kind` (mnistc.h's formulas, torch.optim's) of the 1-D
    float32 array params, in place, from grads (same shape), with the state arrays
    OPTIMIZER_STATE[kind] (each params' shape, updated in place). step >= 1 is this
    update's number (Adam's t; the momentum buffer starts as the gradient at step 1).
    The hyperparameters default to torch's. With ema, also ema = lerp(ema, params,
    1 - ema_decay) in the same pass. No two arrays may overlap."""
    cdef mnc_optimizer opt = _optimizer(kind, momentum, beta1, beta2, eps, weight_decay)
    _check_lr(lr)
    cdef int64_t t = _step(step, 1)
    cdef cnp.ndarray pv = _array("params", params, F32, 1), gv = _array("grads", grads, F32, 1)
    cdef Py_ssize_t n = cnp.PyArray_DIM(pv, 0)
    if not cnp.PyArray_ISWRITEABLE(pv):
        raise ValueError("params must be writeable")
    if cnp.PyArray_DIM(gv, 0) != n:
        raise ValueError(f"grads must have shape ({n},), got {grads.shape}")
    cdef byte_range ranges[MAX_UPDATE_ARRAYS]
    cdef float *sp[2]
    ranges[0], ranges[1] = _bytes_of(pv), _bytes_of(gv)
    cdef int count = 2 + _state_arrays(kind, state, n, sp, ranges + 2)
    cdef float *pe = NULL
    if ema is not None:
        _in_range("ema_decay", ema_decay, 0.0, 1.0, False, False)
        ev = _output("ema", ema, n)
        pe = _f32(ev)
        ranges[count] = _bytes_of(ev)
        count += 1
    _check_disjoint(ranges, count, _UPDATE_LABELS[kind])
    cdef int nt = _threads(n_threads)
    cdef float *pp = _f32(pv)
    cdef const float *pg = _f32(gv)
    with nogil:
        mnc_optimizer_update_f32(&opt, pp, sp[0], sp[1], pe, pg, n, lr, t, ema_decay, nt)


# ----------------------------------------------------------------------------------
# The MLP driver: one C call per training step or evaluation pass.

cdef class MLPKernel:
    """Binds an MLP's parameter arrays and per-batch scratch buffers to the C driver.

    weights[l] is [sizes[l], sizes[l+1]] and biases[l] is [sizes[l+1]], float32,
    C-contiguous; they are updated in place by train_step. weights[0] may instead be 1-D,
    sizes[0] * sizes[1] values: W_0 in column panels (to_panels; mnistc.h), the same
    results, with its GEMMs reading each panel in place and split by whole panels over
    threads. The arrays are kept alive by this object; the scratch buffers are allocated
    once, here. It trains by plain SGD (fused into the backward pass) until set_optimizer
    says otherwise.
    """
    cdef mnc_mlp net
    cdef mnc_mlp_buffers buf
    cdef mnc_mlp_optimizer opt
    cdef bint stores_gradients
    cdef int64_t _optimizer_step
    cdef readonly str optimizer
    cdef tuple _optimizer_arrays  # (block, gradient block, state arrays...), kept alive
    cdef int64_t *sizes
    cdef float **wptr
    cdef float **bptr
    cdef float **aptr
    cdef float **gptr
    cdef readonly tuple layer_sizes
    cdef readonly Py_ssize_t n_classes
    cdef readonly Py_ssize_t batch_size
    # The arrays the C structs point into, kept alive here.
    cdef tuple _weights, _biases, _activations, _gradients
    cdef object _inputs, _labels, _row_loss

    def __cinit__(self):
        self.sizes = NULL
        self.wptr = self.bptr = self.aptr = self.gptr = NULL

    def __init__(self, weights, biases, Py_ssize_t batch_size):
        cdef Py_ssize_t n_layers = len(weights), l
        if n_layers < 1 or len(biases) != n_layers:
            raise ValueError("need one bias per weight matrix and at least one layer")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        sizes = [0] * (n_layers + 1)
        panels = cnp.PyArray_Check(weights[0]) and cnp.PyArray_NDIM(<cnp.ndarray>weights[0]) == 1
        for l in range(n_layers):
            w = _array(f"weights[{l}]", weights[l], F32, 1 if l == 0 and panels else 2)
            b = _array(f"biases[{l}]", biases[l], F32, 1)
            for what, arr in ((f"weights[{l}]", w), (f"biases[{l}]", b)):
                if not cnp.PyArray_ISWRITEABLE(arr):
                    raise ValueError(f"{what} must be writeable (train_step updates it in place)")
            n = b.shape[0]
            if l == 0 and panels:
                if n == 0 or w.shape[0] % n != 0:
                    raise ValueError(f"weights[0] in panels has {w.shape[0]} values, not a "
                                     f"multiple of biases[0]'s {n}")
                sizes[0] = w.shape[0] // n
            elif l == 0:
                sizes[0] = w.shape[0]
            elif w.shape[0] != sizes[l]:
                raise ValueError(f"weights[{l}] has {w.shape[0]} rows, "
                                 f"expected {sizes[l]} (the previous layer's width)")
            if not (l == 0 and panels) and w.shape[1] != n:
                raise ValueError(f"biases[{l}] must have shape ({w.shape[1]},), "
                                 f"got {biases[l].shape}")
            sizes[l + 1] = n
            if w.size == 0:
                raise ValueError(f"weights[{l}] is empty")
        self.layer_sizes = tuple(sizes)
        self.n_classes = sizes[n_layers]
        self.batch_size = batch_size
        inputs = aligned_zeros((batch_size, sizes[0]))
        labels = aligned_zeros(batch_size, np.int32)
        row_loss = aligned_zeros(batch_size)
        acts = [aligned_zeros((batch_size, sizes[l + 1])) for l in range(n_layers)]
        grads = [aligned_zeros((batch_size, sizes[l + 1])) for l in range(n_layers)]
        self._weights, self._biases = tuple(weights), tuple(biases)
        self._inputs, self._labels, self._row_loss = inputs, labels, row_loss
        self._activations, self._gradients = tuple(acts), tuple(grads)

        self.sizes = <int64_t *>calloc(n_layers + 1, sizeof(int64_t))
        self.wptr = <float **>calloc(n_layers, sizeof(float *))
        self.bptr = <float **>calloc(n_layers, sizeof(float *))
        self.aptr = <float **>calloc(n_layers, sizeof(float *))
        self.gptr = <float **>calloc(n_layers, sizeof(float *))
        if not (self.sizes and self.wptr and self.bptr and self.aptr and self.gptr):
            raise MemoryError()
        for l in range(n_layers + 1):
            self.sizes[l] = sizes[l]
        for l in range(n_layers):
            self.wptr[l] = _f32(weights[l])
            self.bptr[l] = _f32(biases[l])
            self.aptr[l] = _f32(acts[l])
            self.gptr[l] = _f32(grads[l])
        self.net.n_layers = <int>n_layers
        self.net.sizes = self.sizes
        self.net.weights = self.wptr
        self.net.biases = self.bptr
        self.net.first_in_panels = panels
        self.buf.batch = batch_size
        self.buf.input = _f32(inputs)
        self.buf.labels = _i32(labels)
        self.buf.row_loss = _f32(row_loss)
        self.buf.activations = self.aptr
        self.buf.grads = self.gptr
        self.optimizer = "sgd"
        self.stores_gradients = False
        self._optimizer_step = 0
        self._optimizer_arrays = ()

    def set_optimizer(self, kind, block, state=(), **hyperparameters):
        """Train with optimizer `kind` from now on (optimizer_update's formulas and
        hyperparameters), with the optimizer step count reset to 0. block is the 1-D
        float32 array that the weights and biases are views of, tiling it exactly; state
        holds the arrays OPTIMIZER_STATE[kind], each block's shape (kept alive here and
        updated in place). Plain sgd without weight decay is the fused step; every other
        optimizer stores the step's gradients in a block of block's layout (allocated
        here, see parameter_gradients) and updates the whole block in one pass."""
        cdef mnc_optimizer settings = _optimizer_from(kind, hyperparameters)
        cdef cnp.ndarray bv = _array("block", block, F32, 1)
        if not cnp.PyArray_ISWRITEABLE(bv):
            raise ValueError("block must be writeable")
        cdef Py_ssize_t n = cnp.PyArray_DIM(bv, 0)
        self._check_tiling(bv)
        cdef float *sp[2]
        cdef byte_range ranges[3]
        ranges[0] = _bytes_of(bv)
        cdef int count = 1 + _state_arrays(kind, state, n, sp, ranges + 1)
        _check_disjoint(ranges, count, ("block",) + _STATE_LABELS[kind])
        fused = kind == "sgd" and settings.weight_decay == 0.0
        grads = None if fused else aligned_zeros(n)
        self.opt.settings = settings
        self.opt.n = n
        self.opt.params = _f32(bv)
        self.opt.grads = NULL if fused else _f32(grads)
        self.opt.state0, self.opt.state1 = sp[0], sp[1]
        self._optimizer_arrays = (bv, grads) + tuple(state)
        self.stores_gradients = not fused
        self.optimizer = kind
        self._optimizer_step = 0

    cdef _check_tiling(self, cnp.ndarray block):
        """ValueError unless the weights and biases are views into block that cover it
        exactly once (the gradient block mirrors this layout)."""
        cdef char *start = cnp.PyArray_BYTES(block)
        cdef Py_ssize_t nbytes = cnp.PyArray_NBYTES(block), offset, end = 0
        pieces = []
        for l, (w, b) in enumerate(zip(self._weights, self._biases)):
            for name, arr in ((f"weights[{l}]", w), (f"biases[{l}]", b)):
                offset = cnp.PyArray_BYTES(<cnp.ndarray>arr) - start
                if offset < 0 or offset + cnp.PyArray_NBYTES(<cnp.ndarray>arr) > nbytes:
                    raise ValueError(f"{name} is not a view into block")
                pieces.append((offset, cnp.PyArray_NBYTES(<cnp.ndarray>arr), name))
        for offset, size, name in sorted(pieces):
            if offset != end:
                raise ValueError(f"the weights and biases must tile block: {name} starts at "
                                 f"byte {offset}, the previous one ends at byte {end}")
            end = offset + size
        if end != nbytes:
            raise ValueError(f"the weights and biases must tile block: they end at byte "
                             f"{end} of {nbytes}")

    @property
    def optimizer_step(self):
        """The number of optimizer updates so far: the next train_step is update
        optimizer_step + 1 (Adam's t). Settable, to resume from a checkpoint."""
        return self._optimizer_step

    @optimizer_step.setter
    def optimizer_step(self, value):
        self._optimizer_step = _step(value, 0)

    @property
    def parameter_gradients(self):
        """The block of the last train_step's gradients (block's layout), or None while
        the step is plain fused SGD (which stores none)."""
        return self._optimizer_arrays[1] if self._optimizer_arrays else None

    def __dealloc__(self):
        free(self.sizes); free(self.wptr); free(self.bptr); free(self.aptr); free(self.gptr)

    @property
    def activations(self):
        """The scratch activations of the last call (the last entry holds logits)."""
        return self._activations

    @property
    def gradients(self):
        """dLoss/dZ of each layer from the last train_step."""
        return self._gradients

    def train_step(self, images, labels, idx, double lr, float scale=PIXEL_SCALE,
                   n_threads=None, *, label_smoothing=0.0):
        """One training step at learning rate lr on rows idx of (images, labels), with the
        optimizer set_optimizer chose (plain SGD by default) and the loss smoothed by
        label_smoothing (see softmax_xent); returns the batch's mean loss before the
        update."""
        _check_lr(lr)
        cdef float smoothing = _check_label_smoothing(label_smoothing)
        _check_dataset(images, labels)
        cdef cnp.ndarray im = <cnp.ndarray>images, lab = <cnp.ndarray>labels
        cdef Py_ssize_t d = cnp.PyArray_DIM(im, 1)
        if d != self.sizes[0]:
            raise ValueError(f"images have {d} columns, the model expects {self.sizes[0]}")
        cdef cnp.ndarray iv = _check_indices(idx, cnp.PyArray_DIM(im, 0))
        cdef Py_ssize_t m = cnp.PyArray_DIM(iv, 0)
        if m < 1 or m > self.batch_size:
            raise ValueError(f"idx must hold 1..{self.batch_size} indices, got {m}")
        cdef const uint8_t *pim = _u8(im)
        cdef const uint8_t *plab = _u8(lab)
        cdef const int32_t *pidx = _i32(iv)
        cdef double loss = 0.0
        cdef int status
        cdef int nt = _threads(n_threads)
        cdef const mnc_mlp_optimizer *opt = &self.opt if self.stores_gradients else NULL
        cdef int64_t step = self._optimizer_step + 1
        with nogil:
            status = mnc_mlp_train_step(&self.net, &self.buf, pim, plab, pidx, m, d, scale,
                                        smoothing, opt, lr, step, &loss, nt)
        if status != 0:
            row = idx[-1 - status]
            raise ValueError(f"labels[{row}] = {labels[row]} is outside "
                             f"[0, {self.n_classes})")
        self._optimizer_step = step
        return loss

    def evaluate(self, images, labels=None, Py_ssize_t k=1, logits=None,
                 float scale=PIXEL_SCALE, n_threads=None):
        """Number of rows of (images, labels) whose label is in the top k (TF tie rule),
        over the whole set (no remainder dropped); 0 when labels is None. Writes the
        logits into `logits` ([N, classes] float32) when given."""
        if labels is None:
            _array("images", images, U8, 2)
        else:
            _check_dataset(images, labels)
        cdef cnp.ndarray im = <cnp.ndarray>images
        cdef Py_ssize_t m = cnp.PyArray_DIM(im, 0), d = cnp.PyArray_DIM(im, 1)
        if d != self.sizes[0]:
            raise ValueError(f"images have {d} columns, the model expects {self.sizes[0]}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        cdef float *optr = NULL
        if logits is not None:
            optr = _f32(_output("logits", logits, m, self.n_classes))
        if m == 0:
            return 0
        cdef const uint8_t *pim = _u8(im)
        cdef const uint8_t *lptr = NULL if labels is None else _u8(<cnp.ndarray>labels)
        cdef int64_t hits = 0
        cdef int status
        cdef int nt = _threads(n_threads)
        with nogil:
            status = mnc_mlp_evaluate(&self.net, &self.buf, pim, lptr, m, d, scale, k,
                                      &hits, optr, nt)
        if status != 0:
            row = -1 - status
            raise ValueError(f"labels[{row}] = {labels[row]} is outside "
                             f"[0, {self.n_classes})")
        return int(hits)
