"""Learning-rate schedules (mnistc.schedules) against their formulas and against
torch.optim.lr_scheduler's, and the run settings that build them (mnistc.config)."""

import math

import pytest

from mnistc.config import TrainConfig, validate
from mnistc.schedules import Schedule

try:
    import torch
except ImportError:  # the comparisons with PyTorch skip without it
    torch = None


def rates(schedule, steps):
    return [schedule.rate(t) for t in range(steps)]


def test_constant_is_the_tutorials_rate_forever():
    s = Schedule(learning_rate=0.01)
    assert rates(s, 5) == [0.01] * 5 and s.rate(10**9) == 0.01


def test_linear_and_cosine_follow_their_formulas_to_the_end():
    n = 37
    linear = Schedule("linear", learning_rate=0.3, total_steps=n, final_lr=0.01)
    cosine = Schedule("cosine", learning_rate=0.3, total_steps=n, final_lr=0.01)
    for t in range(n):
        assert linear.rate(t) == pytest.approx(0.3 + (0.01 - 0.3) * t / n, rel=1e-15)
        assert cosine.rate(t) == pytest.approx(
            0.01 + 0.29 * (1 + math.cos(math.pi * t / n)) / 2, rel=1e-15
        )
    assert linear.rate(n + 5) == linear.rate(n - 1)  # past the horizon: the last rate


def test_warmup_rises_linearly_to_the_schedules_first_rate():
    s = Schedule("cosine", learning_rate=0.2, total_steps=110, warmup_steps=10)
    warm = rates(s, 10)
    assert warm == pytest.approx([0.2 * (t + 1) / 11 for t in range(10)], rel=1e-15)
    assert s.rate(10) == pytest.approx(0.2, rel=1e-15)  # the cosine's step 0
    assert all(a < b for a, b in zip(warm, warm[1:]))


@pytest.mark.parametrize("steps, pct", [(100, 0.3), (1290, 0.25), (7, 0.5), (431, 0.3)])
def test_one_cycle_is_torchs_formula(steps, pct):
    ours = Schedule("one-cycle", learning_rate=0.2, total_steps=steps, pct_start=pct)
    peak_step = max(range(steps), key=ours.rate)
    assert ours.rate(0) == pytest.approx(0.2 / 25, rel=1e-12)
    assert ours.rate(steps - 1) == pytest.approx(0.2 / 25 / 1e4, rel=1e-9)
    assert abs(peak_step - (pct * steps - 1)) <= 1
    if torch is None:
        pytest.skip("PyTorch not installed")
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.2)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=0.2, total_steps=steps, pct_start=pct, cycle_momentum=False
    )
    theirs = []
    for _ in range(steps):
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates(ours, steps) == pytest.approx(theirs, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(
    "kind, cls, kwargs",
    [
        ("linear", "LinearLR", dict(start_factor=1.0, end_factor=0.05)),
        ("cosine", "CosineAnnealingLR", dict(eta_min=0.005)),
    ],
)
def test_linear_and_cosine_match_torch(kind, cls, kwargs):
    if torch is None:
        pytest.skip("PyTorch not installed")
    steps, lr = 50, 0.1
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=lr)
    extra = dict(total_iters=steps) if cls == "LinearLR" else dict(T_max=steps)
    sched = getattr(torch.optim.lr_scheduler, cls)(opt, **kwargs, **extra)
    theirs = []
    for _ in range(steps):
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    ours = Schedule(kind, learning_rate=lr, total_steps=steps, final_lr=0.005)
    assert rates(ours, steps) == pytest.approx(theirs, rel=1e-9)


@pytest.mark.parametrize(
    "settings, fragment",
    [
        (dict(kind="step"), "unknown schedule 'step'"),
        (dict(learning_rate=0.0), "learning_rate must be > 0"),
        (dict(learning_rate=float("nan")), "learning_rate must be a finite number"),
        (
            dict(kind="cosine", total_steps=10, warmup_steps=10),
            "more steps (10) than its warm-up (10)",
        ),
        (
            dict(kind="one-cycle", total_steps=10, pct_start=1.0),
            "pct_start must be between 0 and 1",
        ),
        (dict(warmup_steps=-1), "warmup_steps must be a whole number >= 0"),
        (dict(final_lr=-0.1), "final_lr must be >= 0"),
    ],
)
def test_bad_settings_name_the_field(settings, fragment):
    with pytest.raises(ValueError) as info:
        Schedule(**settings)
    assert fragment in str(info.value)


def test_settings_round_trip_and_unknown_fields_are_refused():
    s = Schedule("one-cycle", learning_rate=0.2, total_steps=1290, warmup_steps=3)
    assert Schedule.from_settings(s.settings()) == s
    with pytest.raises(ValueError, match="unknown field 'gamma'"):
        Schedule.from_settings(dict(s.settings(), gamma=0.1))


def test_what_may_change_on_resume():
    constant = Schedule(learning_rate=0.01)
    assert constant.describes_same_run(Schedule(learning_rate=0.02))  # the user's choice
    assert not constant.describes_same_run(Schedule(learning_rate=0.01, warmup_steps=5))
    cosine = Schedule("cosine", learning_rate=0.1, total_steps=100)
    assert cosine.describes_same_run(Schedule("cosine", learning_rate=0.1, total_steps=100))
    assert not cosine.describes_same_run(Schedule("cosine", learning_rate=0.1, total_steps=200))


# -- the run settings that build schedules and step counts (mnistc.config)


def test_epochs_and_their_checkpoint_steps():
    cfg = TrainConfig(epochs=3, batch_size=128)
    assert cfg.total_steps(55000) == 1290  # ceil(3 * 55000 / 128)
    # epoch e ends at the step during which the e-th pass completes: ceil(e * N / B)
    assert cfg.checkpoint_steps(55000, 1290) == [430, 860, 1290]
    only_end = cfg.replace(checkpoint_every_epochs=0)
    assert only_end.checkpoint_steps(55000, 1290) == [1290]
    half = TrainConfig(epochs=2.5, batch_size=100)
    assert half.total_steps(1000) == 25 and half.checkpoint_steps(1000, 25) == [10, 20, 25]


def test_the_tutorials_steps_are_unchanged():
    cfg = TrainConfig()
    assert cfg.total_steps(55000) == 2000
    assert cfg.checkpoint_steps(55000, 2000) == [1000, 2000]
    assert cfg.schedule_for(2000) == Schedule(learning_rate=0.01)
    assert cfg.optimizer_settings() == {"name": "sgd", "weight_decay": 0.0}


def test_recipes_expand_under_explicit_options():
    fast = TrainConfig.from_recipe("fast")
    assert fast.recipe == "fast" and fast.epochs is not None and fast.max_steps is None
    mine = TrainConfig.from_recipe("fast", max_steps=50, seed=3)
    assert mine.max_steps == 50 and mine.epochs is None and mine.seed == 3
    assert mine.hidden == fast.hidden
    assert TrainConfig.from_recipe("tutorial") == TrainConfig()
    with pytest.raises(ValueError, match="unknown recipe 'slow'"):
        TrainConfig.from_recipe("slow")
    with pytest.raises(TypeError, match="unknown training option 'lr'"):
        TrainConfig.from_recipe("tutorial", lr=0.1)


@pytest.mark.parametrize(
    "changes, fragment",
    [
        (dict(seed=-1), "--seed"),
        (dict(optimizer="rmsprop"), "--optimizer must be one of"),
        (dict(optimizer="momentum", momentum=1.0), "--optimizer momentum: momentum must be"),
        (dict(momentum=0.5), "--momentum does not apply to --optimizer sgd"),
        (dict(max_steps=10, epochs=1), "--max-steps and --epochs"),
        (dict(checkpoint_every_epochs=1), "--checkpoint-every-epochs needs --epochs"),
        (dict(eval_splits=("test", "holdout")), "--eval-splits"),
        (dict(threads=-1), "--threads must be >= 1"),
        (dict(dataset="cifar"), "--dataset must be one of mnist, fashion-mnist"),
    ],
)
def test_bad_run_settings_name_the_flag(changes, fragment):
    with pytest.raises(ValueError) as info:
        validate(TrainConfig(**changes))
    assert fragment in str(info.value)
