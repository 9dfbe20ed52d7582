# tests/test_optim.py: the optimizers' fused update (csrc/optim.c through
# _kernels.optimizer_update) against mnistc.h's formulas evaluated exactly in float32, a
# float64 reference with a rigorous rounding bound, and torch.optim; its thread and CPU
# target invariance and argument errors; then mnistc.optim.Optimizer and the model's
# optimizer state (checkpointable: save, rebuild, load, continue = one run, bit for bit).
# The training step that drives the update is tested in test_mlp_kernel.py.
import json

import numpy as np
import pytest

from mnistc import _kernels as K
from mnistc.model import MLP
from mnistc.optim import HYPERPARAMETERS, Optimizer

import reference as ref

F32 = np.float32

# Cases covering every branch of the formulas: weight decay on and off, the momentum
# buffer's first step, lerp's two rules (w1 = 1 - beta1 below and above 0.5).
CASES = {
    "sgd": {},
    "sgd-wd": {"weight_decay": 0.01},
    "momentum": {"momentum": 0.9},
    "momentum-wd": {"momentum": 0.5, "weight_decay": 0.02},
    "nesterov": {"momentum": 0.9},
    "nesterov-wd": {"momentum": 0.8, "weight_decay": 0.01},
    "adam": {},
    "adam-wd": {"weight_decay": 0.05},
    "adam-low-beta1": {"beta1": 0.3, "beta2": 0.9, "eps": 1e-6},
    "adamw": {"weight_decay": 0.1},
    "adamw-nowd": {"weight_decay": 0.0},
}
BASE_LR = {"sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "adam": 0.01, "adamw": 0.01}


def kind_of(case):
    return case.split("-")[0]


def lr_at(kind, t):
    """A decaying rate, so that every step's lr reaches the kernel (AdamW's decay uses it)."""
    return BASE_LR[kind] / (1.0 + 0.05 * t)


def rng(*key):
    return np.random.default_rng(list(key))


def problem(n, steps, seed=0):
    """(p0, [g_1, ...]): parameters and gradients over ~5 decades of magnitude, each
    gradient a fixed drift plus noise (so momentum and moments build up), some exactly 0
    (a dead unit), and some parameters exactly 0."""
    g = rng(7000, seed, n, steps)
    p0 = (g.standard_normal(n) * 10.0 ** g.uniform(-2, 1, n)).astype(F32)
    p0[g.random(n) < 0.05] = 0.0
    scale = 10.0 ** g.uniform(-3, 1, n)
    scale[g.random(n) < 0.05] = 0.0
    drift = g.standard_normal(n)
    grads = [((drift + g.standard_normal(n)) * scale).astype(F32) for _ in range(steps)]
    return p0, grads


def run_kernel(case, p0, grads, n_threads=None, ema_decay=None, params=None):
    """(p, state, ema) after one optimizer_update per gradient, from zero state; params,
    when given, is the (possibly unaligned) array to update in place, set to p0."""
    kind, hyper = kind_of(case), CASES[case]
    p = p0.copy() if params is None else params
    p[...] = p0
    state = tuple(np.zeros_like(p0) for _ in K.OPTIMIZER_STATE[kind])
    ema = None if ema_decay is None else p0.copy()
    for t, g in enumerate(grads, start=1):
        K.optimizer_update(
            kind,
            p,
            g,
            state,
            lr=lr_at(kind, t),
            step=t,
            ema=ema,
            ema_decay=ema_decay or 0.0,
            n_threads=n_threads,
            **hyper,
        )
    return p, state, ema


def run_reference(case, p0, grads, bounded=False, ema_decay=None):
    """The same updates by reference.optimizer_update: in float32 (the exact bits the
    contract defines) or, bounded=True, in float64 with each value's rounding bound."""
    kind, hyper = kind_of(case), CASES[case]
    wrap = ref.Bounded if bounded else np.copy
    p = wrap(p0)
    state = tuple(wrap(np.zeros_like(p0)) for _ in K.OPTIMIZER_STATE[kind])
    ema = None if ema_decay is None else wrap(p0)
    sqrt = ref.bounded_sqrt if bounded else np.sqrt
    for t, g in enumerate(grads, start=1):
        scalars = ref.optimizer_scalars(kind, lr_at(kind, t), t, **hyper)
        p, state = ref.optimizer_update(kind, p, wrap(g), state, scalars, sqrt)
        if ema is not None:
            ema = ref.ema_update(ema, p, ema_decay)
    return p, state, ema


def assert_same_bits(got, want, what):
    for name, a, b in zip(
        ("params", "state[0]", "state[1]"), (got[0], *got[1]), (want[0], *want[1])
    ):
        assert a.tobytes() == b.tobytes(), (
            f"{what}: {name} differs in {(a.view(np.int32) != b.view(np.int32)).sum()} "
            f"of {a.size} elements"
        )


# ----------------------------------------------------------------- the contract, exactly


@pytest.mark.parametrize("case", CASES)
def test_update_is_the_contract_bit_for_bit(isa, case):
    """On every CPU target the kernel gives exactly the bits of mnistc.h's formulas
    evaluated by NumPy in float32 (each operation correctly rounded, no FMA), over 20
    steps, on sizes with vector tails, one element and several blocks. So generic, AVX2
    and AVX-512 agree bit for bit."""
    for n in (1, 15, 17, 1000, 4099):
        p0, grads = problem(n, 20)
        assert_same_bits(
            run_kernel(case, p0, grads), run_reference(case, p0, grads), f"{case} n={n} on {isa}"
        )


@pytest.mark.parametrize("case", CASES)
def test_update_bit_identical_across_threads(n_threads, case):
    """1000003 elements (several threads' worth), the parameters one float off a cache
    line so the slice boundaries move: any thread count gives the contract's bits."""
    p0, grads = problem(1000003, 3)
    params = np.empty(p0.size + 1, F32)[1:]
    got = run_kernel(case, p0, grads, n_threads=n_threads, params=params)
    assert_same_bits(got, run_reference(case, p0, grads), f"{case} at {n_threads} threads")


@pytest.mark.parametrize("ema_decay", [0.999, 0.2])
def test_ema_rides_in_the_same_pass(isa, ema_decay):
    """ema = lerp(ema, p, 1 - decay) after each update (torch.optim.swa_utils' EMA), both
    lerp rules: the contract's bits, and the parameters are the same as without it."""
    p0, grads = problem(1003, 20)
    got = run_kernel("adamw", p0, grads, ema_decay=ema_decay)
    want = run_reference("adamw", p0, grads, ema_decay=ema_decay)
    assert_same_bits(got, want, f"adamw + EMA {ema_decay} on {isa}")
    assert got[2].tobytes() == want[2].tobytes(), "ema differs"
    assert got[0].tobytes() == run_kernel("adamw", p0, grads)[0].tobytes()
    bounded = run_reference("adamw", p0, grads, bounded=True, ema_decay=ema_decay)[2]
    ref.assert_close(got[2], bounded.value, bounded.err, "ema vs float64")


# ------------------------------------------------- float64 reference with a rounding bound

# Adam's L2 decay feeds p back into m and v, and p's sensitivity to m is s / d, large where
# gradients are small: a rigorous elementwise bound, which cannot know the feedback's sign
# (a larger p gives a larger m and so a smaller p), grows geometrically over the steps
# while the real error does not. That case is checked step by step only (below).
GLOBAL_CASES = [case for case in CASES if case != "adam-wd"]


def check_within_bound(got, bounded, what, factor=1.0):
    """|result - float64 value| <= factor x the propagated rounding bound, elementwise."""
    for name, a, b in zip(
        ("params", "state[0]", "state[1]"), (got[0], *got[1]), (bounded[0], *bounded[1])
    ):
        ref.assert_close(a, b.value, factor * b.err, f"{what}: {name}")


@pytest.mark.parametrize("case", GLOBAL_CASES)
@pytest.mark.parametrize("n, steps", [(1, 200), (15, 200), (17, 200), (1000, 200), (100003, 10)])
def test_update_matches_float64_reference(case, n, steps):
    """Many steps from the same start against the same formulas in float64. The bound is
    rigorous (each operation's operand errors propagated exactly, plus its rounding), so
    it grows with the steps and with each element's magnitudes by itself; it stays far
    below what a wrong term moves (test_float64_check_catches_wrong_formulas)."""
    p0, grads = problem(n, steps)
    got = run_kernel(case, p0, grads)
    check_within_bound(
        got, run_reference(case, p0, grads, bounded=True), f"{case} n={n}, {steps} steps"
    )


def one_step_bound(case, t, state, g):
    """(p, state) of update t from `state` = (p, state arrays) in float64, with the
    rounding bound of one float32 update (its inputs are exact)."""
    kind = kind_of(case)
    scalars = ref.optimizer_scalars(kind, lr_at(kind, t), t, **CASES[case])
    p, rest = state
    return ref.optimizer_update(
        kind,
        ref.Bounded(p),
        ref.Bounded(g),
        tuple(ref.Bounded(a) for a in rest),
        scalars,
        ref.bounded_sqrt,
    )


class TorchStepper:
    """torch.optim on one parameter, stepped from any given state (set before each step)."""

    def __init__(self, torch, case, n):
        self.torch, self.kind = torch, kind_of(case)
        self.param = torch.nn.Parameter(torch.zeros(n))
        hyper = CASES[case]
        wd = hyper.get("weight_decay", 0.0)
        if self.kind in ("sgd", "momentum", "nesterov"):
            self.opt = torch.optim.SGD(
                [self.param],
                lr=1.0,
                momentum=hyper.get("momentum", 0.0),
                nesterov=self.kind == "nesterov",
                weight_decay=wd,
                foreach=False,
            )
        else:
            cls = torch.optim.Adam if self.kind == "adam" else torch.optim.AdamW
            self.opt = cls(
                [self.param],
                lr=1.0,
                eps=hyper.get("eps", 1e-8),
                weight_decay=wd,
                betas=(hyper.get("beta1", 0.9), hyper.get("beta2", 0.999)),
                foreach=False,
            )

    def step(self, t, g, state=None):
        """Update t with gradient g; from `state` (p, state arrays) when given, else from
        torch's own. Returns (p, state arrays) as mnistc orders them."""
        torch, st = self.torch, self.opt.state[self.param]
        names = () if self.kind == "sgd" else K.OPTIMIZER_STATE[self.kind]
        if state is not None:
            with torch.no_grad():
                self.param.copy_(torch.from_numpy(state[0]))
            if t > 1:  # torch creates its state on the first step
                for name, value in zip(names, state[1]):
                    st[name] = torch.from_numpy(value.copy())
                if "step" in st:
                    st["step"] = torch.tensor(float(t - 1))
        self.opt.param_groups[0]["lr"] = lr_at(self.kind, t)
        self.param.grad = torch.from_numpy(g.copy())
        self.opt.step()
        if "step" in st:
            assert float(st["step"]) == t
        return self.param.detach().numpy().copy(), tuple(st[n].numpy().copy() for n in names)


@pytest.mark.parametrize("case", CASES)
def test_update_step_by_step_matches_float64_and_torch(case):
    """Along 200 steps of the kernel's own trajectory, each update from the kernel's
    float32 state is within one update's rigorous rounding bound of the float64 formula,
    and torch.optim's update from the same state (its single-tensor CPU path, when torch
    is installed) within 3 x that bound of the kernel's: torch rounds differently (FMAs
    in add-with-alpha and lerp; MKL's sqrt is not always correctly rounded), but each of
    its operations is within an ulp (2u) of exact, so within 2 x the bound itself."""
    try:
        import torch
    except ImportError:
        torch = None
    kind = kind_of(case)
    p0, grads = problem(1000, 200)
    stepper = TorchStepper(torch, case, p0.size) if torch is not None else None
    state = (p0.copy(), tuple(np.zeros_like(p0) for _ in K.OPTIMIZER_STATE[kind]))
    for t, g in enumerate(grads, start=1):
        p, rest = state[0].copy(), tuple(a.copy() for a in state[1])
        K.optimizer_update(kind, p, g, rest, lr=lr_at(kind, t), step=t, **CASES[case])
        bounded = one_step_bound(case, t, state, g)
        check_within_bound((p, rest), bounded, f"{case} step {t}")
        if stepper is not None:
            theirs = stepper.step(t, g, state)
            for name, mine, them, b in zip(
                ("params", "state[0]", "state[1]"),
                (p, *rest),
                (theirs[0], *theirs[1]),
                (bounded[0], *bounded[1]),
            ):
                ref.assert_close(mine, them, 3 * b.err, f"{case} step {t} vs torch: {name}")
        state = (p, rest)


@pytest.mark.parametrize("case", GLOBAL_CASES)
def test_update_matches_torch_optim_over_100_steps(case):
    """torch.optim left to run on its own state, the same gradients and per-step rates:
    within 3 x mnistc's global bound after 100 steps (as above: torch's own error is
    within twice the bound)."""
    torch = pytest.importorskip("torch")
    p0, grads = problem(1000, 100)
    stepper = TorchStepper(torch, case, p0.size)
    theirs = stepper.step(1, grads[0], (p0, ()))
    for t, g in enumerate(grads[1:], start=2):
        theirs = stepper.step(t, g)
    got = run_kernel(case, p0, grads)
    bounded = run_reference(case, p0, grads, bounded=True)
    for name, mine, them, b in zip(
        ("params", "state[0]", "state[1]"),
        (got[0], *got[1]),
        (theirs[0], *theirs[1]),
        (bounded[0], *bounded[1]),
    ):
        ref.assert_close(mine, them, 3 * b.err, f"{case} vs torch: {name}")


@pytest.mark.parametrize(
    "wrong",
    [
        "lr 0.1% high",
        "no second-moment bias correction",
        "momentum for nesterov",
        "step count one ahead",
    ],
)
def test_float64_check_catches_wrong_formulas(wrong):
    """The bounds are tight enough to tell slightly wrong formulas from rounding: each of
    these deliberate mistakes in the reference fails the global check."""
    p0, grads = problem(1000, 100)
    case = "nesterov" if wrong.startswith("momentum") else "adam"
    got = run_kernel(case, p0, grads)
    p, state = (
        ref.Bounded(p0),
        tuple(ref.Bounded(np.zeros_like(p0)) for _ in K.OPTIMIZER_STATE[case]),
    )
    for t, g in enumerate(grads, start=1):
        kind = "momentum" if wrong.startswith("momentum") else case
        s = ref.optimizer_scalars(
            kind,
            lr_at(case, t) * (1.001 if "lr" in wrong else 1.0),
            t + 1 if "step" in wrong else t,
            **CASES[case],
        )
        if "bias" in wrong:
            s["bc2_sqrt"] = F32(1.0)
        p, state = ref.optimizer_update(kind, p, ref.Bounded(g), state, s, ref.bounded_sqrt)
    with pytest.raises(AssertionError, match="out of tolerance"):
        check_within_bound(got, (p, state), wrong)


# ----------------------------------------------------------------------- argument errors


def test_optimizer_update_argument_errors():
    p, g = np.zeros(8, F32), np.zeros(8, F32)
    m, v = np.zeros(8, F32), np.zeros(8, F32)
    update = K.optimizer_update

    def fails(error, match, *args, **kwargs):
        kwargs = {"lr": 0.1, "step": 1, **kwargs}
        with pytest.raises(error, match=match):
            update(*args, **kwargs)

    fails(ValueError, "unknown optimizer 'rmsprop'", "rmsprop", p, g)
    fails(TypeError, "unexpected keyword argument 'betas'", "adam", p, g, (m, v), betas=0.9)
    fails(
        ValueError, r"momentum must be in \[0, 1\), got 1.0", "momentum", p, g, (m,), momentum=1.0
    )
    fails(ValueError, r"momentum must be in \(0, 1\), got 0.0", "nesterov", p, g, (m,))
    fails(ValueError, r"beta1 must be in \[0, 1\)", "adam", p, g, (m, v), beta1=-0.1)
    fails(
        ValueError, r"beta2 must be in \[0, 1\), got nan", "adam", p, g, (m, v), beta2=float("nan")
    )
    fails(ValueError, "eps must be finite and > 0, got 0.0", "adam", p, g, (m, v), eps=0.0)
    fails(
        ValueError,
        "weight_decay must be finite and >= 0, got inf",
        "sgd",
        p,
        g,
        weight_decay=float("inf"),
    )
    fails(ValueError, "weight_decay is out of range: 1000000", "sgd", p, g, weight_decay=10**400)
    fails(
        TypeError, "momentum must be a real number, not str", "momentum", p, g, (m,), momentum="0.9"
    )
    fails(TypeError, "weight_decay must be a real number, not bool", "sgd", p, g, weight_decay=True)
    fails(ValueError, "lr must be finite and >= 0, got -0.1", "sgd", p, g, lr=-0.1)
    fails(ValueError, "lr must be finite and >= 0, got inf", "sgd", p, g, lr=float("inf"))
    fails(ValueError, r"step must be in \[1, 2\*\*62\), got 0", "sgd", p, g, step=0)
    fails(TypeError, "step must be an int, not float", "sgd", p, g, step=1.0)
    fails(TypeError, "params must have dtype float32", "sgd", p.astype(np.float64), g)
    fails(ValueError, "params must be 1-D", "sgd", p.reshape(2, 4), g)
    fails(ValueError, "params must be C-contiguous", "sgd", np.zeros(16, F32)[::2], g)
    fails(ValueError, r"grads must have shape \(8,\), got \(7,\)", "sgd", p, g[:7])
    fails(TypeError, "grads must be a numpy.ndarray, not list", "sgd", p, [0.0] * 8)
    fails(
        ValueError,
        r"state must be a tuple of 2 arrays for adam \(exp_avg, exp_avg_sq\)",
        "adam",
        p,
        g,
        (m,),
    )
    fails(ValueError, r"state must be a tuple of 0 arrays for sgd", "sgd", p, g, (m,))
    fails(
        TypeError,
        r"state\[1\] \(exp_avg_sq\) must be a numpy.ndarray, not None",
        "adam",
        p,
        g,
        (m, None),
    )
    fails(
        ValueError,
        r"state\[0\] \(momentum_buffer\) must have shape \(8,\)",
        "momentum",
        p,
        g,
        (m[:4],),
    )
    fails(
        ValueError,
        r"state\[0\] \(exp_avg\) and state\[1\] \(exp_avg_sq\) overlap",
        "adam",
        p,
        g,
        (m, m),
    )
    fails(ValueError, r"params and grads overlap", "sgd", p, p)
    block = np.zeros(20, F32)
    fails(
        ValueError,
        r"params and state\[0\] \(momentum_buffer\) overlap",
        "momentum",
        block[:10],
        np.zeros(10, F32),
        (block[5:15],),
    )
    fails(ValueError, r"ema_decay must be in \[0, 1\]", "sgd", p, g, ema=v, ema_decay=1.5)
    fails(ValueError, "params and ema overlap", "sgd", p, g, ema=p, ema_decay=0.5)
    frozen = p.copy()
    frozen.flags.writeable = False
    fails(ValueError, "params must be writeable", "sgd", frozen, g)
    frozen_m = m.copy()
    frozen_m.flags.writeable = False
    fails(
        ValueError,
        r"state\[0\] \(momentum_buffer\) must be writeable",
        "momentum",
        p,
        g,
        (frozen_m,),
    )
    assert not p.any() and not m.any() and not v.any()  # nothing ran
    update("sgd", np.zeros(0, F32), np.zeros(0, F32), lr=0.1, step=1)  # empty: a no-op


# ----------------------------------------------------------------- mnistc.optim.Optimizer


def test_optimizer_defaults_and_settings_round_trip():
    for name in HYPERPARAMETERS:
        opt = Optimizer(name)
        assert opt.name == name and opt.hyperparameters == HYPERPARAMETERS[name]
        settings = json.loads(json.dumps(opt.settings()))
        assert settings == {"name": name, **HYPERPARAMETERS[name]}
        assert Optimizer.from_settings(settings) == opt
    assert Optimizer() == Optimizer("sgd", weight_decay=0)
    opt = Optimizer("nesterov", momentum=0.95, weight_decay=1e-4)
    assert opt.state_names == ("momentum_buffer",)
    assert Optimizer("adamw").state_names == ("exp_avg", "exp_avg_sq")
    assert Optimizer.from_settings(opt.settings()) == opt
    assert repr(opt) == "Optimizer('nesterov', momentum=0.95, weight_decay=0.0001)"
    assert len({opt, Optimizer.from_settings(opt.settings())}) == 1
    assert Optimizer("adam", beta1=0, eps=1).hyperparameters["beta1"] == 0.0


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        (("lion",), {}, ValueError, "unknown optimizer 'lion'; expected one of sgd, momentum"),
        (
            ("sgd",),
            {"momentum": 0.9},
            ValueError,
            "optimizer sgd has no setting 'momentum'; its settings are weight_decay",
        ),
        (("adam",), {"lr": 0.1}, ValueError, "optimizer adam has no setting 'lr'"),
        (("momentum",), {"momentum": 1.0}, ValueError, r"momentum must be in \[0, 1\)"),
        (("nesterov",), {"momentum": 0.0}, ValueError, r"momentum must be in \(0, 1\)"),
        (("adam",), {"beta2": 1.0}, ValueError, r"beta2 must be in \[0, 1\)"),
        (("adamw",), {"eps": -1e-8}, ValueError, "eps must be finite and > 0, got -1e-08"),
        (("sgd",), {"weight_decay": -0.1}, ValueError, "weight_decay must be finite and >= 0"),
        (("adam",), {"beta1": None}, TypeError, "beta1 must be a real number, not NoneType"),
    ],
)
def test_optimizer_validation(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        Optimizer(*args, **kwargs)


@pytest.mark.parametrize(
    "settings, error, match",
    [
        ([("name", "sgd")], TypeError, "optimizer settings must be a dict, not list"),
        ({"weight_decay": 0.0}, ValueError, "optimizer settings have no 'name'"),
        (
            {"name": "adam", "beta1": 0.9, "beta2": 0.999, "weight_decay": 0.0},
            ValueError,
            "optimizer settings for adam have no 'eps'",
        ),
        (
            {"name": "sgd", "weight_decay": 0.0, "momentum": 0.0},
            ValueError,
            "optimizer sgd has no setting 'momentum'",
        ),
        (
            {"name": "momentum", "momentum": "0.9", "weight_decay": 0.0},
            TypeError,
            "momentum must be a real number, not str",
        ),
        ({"name": 3}, ValueError, "unknown optimizer 3"),
    ],
)
def test_optimizer_from_settings_errors(settings, error, match):
    with pytest.raises(error, match=match):
        Optimizer.from_settings(settings)


# ---------------------------------------------------------------- the model's optimizer


NET = {"hidden": (24, 12), "batch_size": 16, "input_size": 30, "num_classes": 10}
MODEL_OPTIMIZERS = [
    Optimizer("sgd"),
    Optimizer("sgd", weight_decay=1e-3),
    Optimizer("momentum", momentum=0.9),
    Optimizer("nesterov", momentum=0.8),
    Optimizer("adam"),
    Optimizer("adamw", weight_decay=0.05),
]


def data(rows=200, width=30):
    g = rng(8000, rows, width)
    return (
        g.integers(0, 256, (rows, width), dtype=np.uint8),
        g.integers(0, 10, rows, dtype=np.uint8),
    )


def batches(steps, rows=200, batch=16):
    """The first `steps` batches of one fixed sequence."""
    g = rng(8001, rows)
    return [g.integers(0, rows, batch).astype(np.int32) for _ in range(steps)]


def lr_for(opt):
    return 1e-3 if opt is not None and opt.name.startswith("adam") else 0.05


def trained_model(opt, steps, start=None):
    """A model with `opt`, fresh from seed 0 or, with start, a copy of that model and
    its optimizer state; then `steps` steps (the ones after start's)."""
    model = MLP(optimizer=opt, **NET)
    model.initialize(np.random.default_rng(0))
    done = 0
    if start is not None:
        model.load_state_dict(start.state_dict())
        tensors, step = start.optimizer_state()
        model.load_optimizer_state({**start.state_dict(), **tensors}, step)
        done = step
    images, labels = data()
    for idx in batches(done + steps)[done:]:
        model.train_step(images, labels, idx, lr_for(opt))
    return model


@pytest.mark.parametrize("opt", MODEL_OPTIMIZERS, ids=lambda o: repr(o.settings()))
def test_state_round_trip_continues_bit_for_bit(opt):
    """Train 7 steps, take the parameters and optimizer state, rebuild a model from the
    JSON'd settings, load both, train 8 more: the same bits as 15 steps in one go."""
    straight = trained_model(opt, 15)
    first = trained_model(opt, 7)
    tensors, step = first.optimizer_state()
    assert step == 7
    assert sorted(tensors) == [f"optimizer/{n}" for n in sorted(opt.state_names)]
    for value in tensors.values():
        assert value.shape == (first._block.size,) and value.dtype == F32
        assert value.any() or opt.name == "sgd"
    rebuilt = Optimizer.from_settings(json.loads(json.dumps(opt.settings())))
    resumed = trained_model(rebuilt, 8, start=first)
    assert resumed.optimizer_state()[1] == straight.optimizer_state()[1] == 15
    for name, value in straight.state_dict().items():
        assert value.tobytes() == resumed.state_dict()[name].tobytes(), name
    for name, value in straight.optimizer_state()[0].items():
        assert value.tobytes() == resumed.optimizer_state()[0][name].tobytes(), name


def test_default_model_is_the_fused_sgd_step():
    """MLP without an optimizer trains by the fused SGD path (no gradient stored), the same
    bits as an explicit Optimizer("sgd"); weight decay moves SGD to the stored-gradient
    path."""
    default = trained_model(None, 5)
    explicit = trained_model(Optimizer("sgd"), 5)
    assert default.optimizer == Optimizer("sgd")
    assert default._kernel.parameter_gradients is None
    assert default.optimizer_state()[0] == {}
    for name, value in default.state_dict().items():
        assert value.tobytes() == explicit.state_dict()[name].tobytes()
    decayed = trained_model(Optimizer("sgd", weight_decay=1e-3), 5)
    assert decayed._kernel.parameter_gradients is not None
    assert decayed._kernel.parameter_gradients.any()


def test_initialize_resets_optimizer_state():
    model = trained_model(Optimizer("adam"), 3)
    model.initialize(np.random.default_rng(0))
    tensors, step = model.optimizer_state()
    assert step == 0 and not any(v.any() for v in tensors.values())
    fresh = trained_model(Optimizer("adam"), 0)
    for name, value in fresh.state_dict().items():
        assert value.tobytes() == model.state_dict()[name].tobytes()


def test_load_optimizer_state_errors_change_nothing():
    model = trained_model(Optimizer("momentum"), 3)
    name = "optimizer/momentum_buffer"
    good = model.optimizer_state()[0][name]
    before = model.optimizer_state()

    def fails(error, match, tensors, step=3):
        with pytest.raises(error, match=match):
            model.load_optimizer_state(tensors, step)
        after = model.optimizer_state()
        assert after[1] == before[1] and after[0][name].tobytes() == before[0][name].tobytes()

    fails(
        ValueError,
        r"missing optimizer state 'optimizer/momentum_buffer' \(the model's "
        r"optimizer is momentum\)",
        {},
    )
    fails(ValueError, r"has shape \(5,\), the model needs \(" + str(good.size), {name: good[:5]})
    fails(ValueError, "has dtype float64, not float32", {name: good.astype(np.float64)})
    fails(
        ValueError,
        "unexpected optimizer state 'optimizer/exp_avg'",
        {name: good, "optimizer/exp_avg": good},
    )
    fails(ValueError, r"step must be in \[0, 2\*\*62\), got -1", {name: good}, -1)
    fails(TypeError, "step must be an int, not float", {name: good}, 3.0)
    model.load_optimizer_state({name: np.zeros_like(good), "hidden1/weights": None}, 0)
    assert model.optimizer_state()[1] == 0 and not model.optimizer_state()[0][name].any()


def test_model_rejects_a_non_optimizer():
    with pytest.raises(TypeError, match="optimizer must be a mnistc.optim.Optimizer or None"):
        MLP(optimizer="adam", **NET)
