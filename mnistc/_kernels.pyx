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
import numpy as np

cimport numpy as cnp
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
                             int64_t m, int64_t n, float grad_scale, int n_threads)
    int mnc_in_top_k_f32(uint8_t *correct, int64_t *n_correct, const float *logits,
                         const int32_t *labels, int64_t m, int64_t n, int64_t k,
                         int n_threads)
    void mnc_gather_scale_u8(float *x, int32_t *y, const uint8_t *images,
                             const uint8_t *labels, const int32_t *idx,
                             int64_t m, int64_t d, float scale, int n_threads)

    ctypedef struct mnc_mlp:
        int n_layers
        const int64_t *sizes
        float **weights
        float **biases
    ctypedef struct mnc_mlp_buffers:
        int64_t batch
        float *input
        int32_t *labels
        float **activations
        float **grads
        float *row_loss
    int mnc_mlp_train_step(const mnc_mlp *net, const mnc_mlp_buffers *buf,
                           const uint8_t *images, const uint8_t *labels,
                           const int32_t *idx, int64_t m, int64_t image_size,
                           float scale, float lr, double *loss, int n_threads)
    int mnc_mlp_evaluate(const mnc_mlp *net, const mnc_mlp_buffers *buf,
                         const uint8_t *images, const uint8_t *labels, int64_t m,
                         int64_t image_size, float scale, int64_t k,
                         int64_t *n_correct, float *logits_out, int n_threads)

cdef extern from "stdlib.h" nogil:
    void *calloc(size_t n, size_t size)
    void free(void *p)


# ----------------------------------------------------------------------------------
# Targets and threads

ISA_NAMES = tuple(mnc_isa_name(<mnc_isa>i).decode() for i in range(MNC_ISA_COUNT))
"""The CPU targets, most portable first: the values of MNISTC_ISA and set_isa."""

GEMM_KC = MNC_GEMM_KC
"""The reduction block of the GEMM's rounding contract (mnistc.h)."""

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
                 n_threads=None):
    """Fused sparse softmax cross-entropy.

    Returns (mean_loss, row_loss, dlogits): row_loss[i] = logsumexp(logits[i]) -
    logits[i, labels[i]], dlogits = grad_scale * (softmax - onehot) (grad_scale
    defaults to 1/m, the gradient of the mean), or None when gradient=False.
    """
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
        status = mnc_softmax_xent_f32(pd, pr, &mean, pl, py, m, n, scale, nt)
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


def gather_scale(images, labels, idx, float scale=1.0 / 255.0, n_threads=None):
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
# The MLP driver: one C call per training step or evaluation pass.

cdef class MLPKernel:
    """Binds an MLP's parameter arrays and per-batch scratch buffers to the C driver.

    weights[l] is [sizes[l], sizes[l+1]] and biases[l] is [sizes[l+1]], float32,
    C-contiguous; they are updated in place by train_step. The arrays are kept alive
    by this object; the scratch buffers are allocated once, here.
    """
    cdef mnc_mlp net
    cdef mnc_mlp_buffers buf
    cdef int64_t *sizes
    cdef float **wptr
    cdef float **bptr
    cdef float **aptr
    cdef float **gptr
    cdef readonly tuple layer_sizes
    cdef readonly Py_ssize_t n_classes
    cdef readonly Py_ssize_t batch_size
    cdef list _keep

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
        for l in range(n_layers):
            for what, arr in ((f"weights[{l}]", _array(f"weights[{l}]", weights[l], F32, 2)),
                              (f"biases[{l}]", _array(f"biases[{l}]", biases[l], F32, 1))):
                if not cnp.PyArray_ISWRITEABLE(arr):
                    raise ValueError(f"{what} must be writeable (train_step updates it in place)")
            if l == 0:
                sizes[0] = weights[0].shape[0]
            elif weights[l].shape[0] != sizes[l]:
                raise ValueError(f"weights[{l}] has {weights[l].shape[0]} rows, "
                                 f"expected {sizes[l]} (the previous layer's width)")
            sizes[l + 1] = weights[l].shape[1]
            if biases[l].shape[0] != sizes[l + 1]:
                raise ValueError(f"biases[{l}] must have shape ({sizes[l + 1]},), got {biases[l].shape}")
            if weights[l].size == 0:
                raise ValueError(f"weights[{l}] is empty")
        self.layer_sizes = tuple(sizes)
        self.n_classes = sizes[n_layers]
        self.batch_size = batch_size
        inputs = np.zeros((batch_size, sizes[0]), np.float32)
        labels = np.zeros(batch_size, np.int32)
        row_loss = np.zeros(batch_size, np.float32)
        acts = [np.zeros((batch_size, sizes[l + 1]), np.float32) for l in range(n_layers)]
        grads = [np.zeros((batch_size, sizes[l + 1]), np.float32) for l in range(n_layers)]
        self._keep = [list(weights), list(biases), inputs, labels, row_loss, acts, grads]

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
        self.buf.batch = batch_size
        self.buf.input = _f32(inputs)
        self.buf.labels = _i32(labels)
        self.buf.row_loss = _f32(row_loss)
        self.buf.activations = self.aptr
        self.buf.grads = self.gptr

    def __dealloc__(self):
        free(self.sizes); free(self.wptr); free(self.bptr); free(self.aptr); free(self.gptr)

    @property
    def activations(self):
        """The scratch activations of the last call (the last entry holds logits)."""
        return tuple(self._keep[5])

    @property
    def gradients(self):
        """dLoss/dZ of each layer from the last train_step."""
        return tuple(self._keep[6])

    def train_step(self, images, labels, idx, float lr, float scale=1.0 / 255.0,
                   n_threads=None):
        """One SGD step on rows idx of (images, labels); returns the batch's mean loss
        before the update."""
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
        with nogil:
            status = mnc_mlp_train_step(&self.net, &self.buf, pim, plab, pidx, m, d, scale,
                                        lr, &loss, nt)
        if status != 0:
            row = idx[-1 - status]
            raise ValueError(f"labels[{row}] = {labels[row]} is outside "
                             f"[0, {self.n_classes})")
        return loss

    def evaluate(self, images, labels=None, Py_ssize_t k=1, logits=None,
                 float scale=1.0 / 255.0, n_threads=None):
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
