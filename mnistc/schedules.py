"""Learning-rate schedules: the rate of step t as a pure function of t and the settings.

Nothing here has state, so a resumed run computes exactly the rates an uninterrupted one
would. Step t counts from 0 (the update that turns global step t into t + 1). With
`warmup_steps = W`, steps t < W use rate(W) * (t + 1) / (W + 1), rising linearly towards
the schedule's first rate, and the schedule proper runs over the remaining
n = total_steps - W steps, s = t - W:

  constant   learning_rate
  linear     learning_rate + (final_lr - learning_rate) * s / n       (torch's LinearLR)
  cosine     final_lr + (learning_rate - final_lr) * (1 + cos(pi s / n)) / 2
                                                          (torch's CosineAnnealingLR)
  one-cycle  torch.optim.lr_scheduler.OneCycleLR with anneal_strategy="cos",
             three_phase=False and total_steps = n: from learning_rate / div_factor up
             to learning_rate over the first pct_start of the steps, then down to
             learning_rate / div_factor / final_div_factor, each half a cosine

Rates are computed in double precision; the kernels take them as float32.
"""

import math
from dataclasses import asdict, dataclass, fields

KINDS = ("constant", "linear", "cosine", "one-cycle")


@dataclass(frozen=True)
class Schedule:
    kind: str = "constant"
    learning_rate: float = 0.01  # the constant rate, the start of a decay, one-cycle's peak
    total_steps: int = 0  # the run's length; ignored by "constant"
    warmup_steps: int = 0
    final_lr: float = 0.0  # linear and cosine: where the decay ends
    pct_start: float = 0.3  # one-cycle: the share of steps spent rising
    div_factor: float = 25.0  # one-cycle: start = learning_rate / div_factor
    final_div_factor: float = 1e4  # one-cycle: end = start / final_div_factor

    def __post_init__(self):
        def bad(name, rule):
            raise ValueError(
                f"schedule {self.kind!r}: {name} must be {rule}, got {getattr(self, name)!r}"
            )

        if self.kind not in KINDS:
            raise ValueError(f"unknown schedule {self.kind!r}; expected one of {', '.join(KINDS)}")
        for name in ("learning_rate", "final_lr", "pct_start", "div_factor", "final_div_factor"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
            ):
                bad(name, "a finite number")
        for name in ("total_steps", "warmup_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                bad(name, "a whole number >= 0")
        if self.learning_rate <= 0:
            bad("learning_rate", "> 0")
        if self.final_lr < 0:
            bad("final_lr", ">= 0")
        if not 0 < self.pct_start < 1:
            bad("pct_start", "between 0 and 1")
        if self.div_factor < 1 or self.final_div_factor < 1:
            bad("div_factor" if self.div_factor < 1 else "final_div_factor", ">= 1")
        if self.kind != "constant" and self.warmup_steps >= self.total_steps:
            raise ValueError(
                f"schedule {self.kind!r} needs more steps ({self.total_steps}) than its "
                f"warm-up ({self.warmup_steps})"
            )

    def rate(self, step):
        """The learning rate of 0-based step `step`."""
        w = self.warmup_steps
        if step < w:
            return self._decayed(0) * (step + 1) / (w + 1)
        return self._decayed(step - w)

    def _decayed(self, s):
        lr = self.learning_rate
        if self.kind == "constant":
            return lr
        n = self.total_steps - self.warmup_steps
        s = min(s, n - 1)  # steps past the horizon keep the last rate
        if self.kind == "linear":
            return lr + (self.final_lr - lr) * s / n
        if self.kind == "cosine":
            return self.final_lr + (lr - self.final_lr) * (1 + math.cos(math.pi * s / n)) / 2
        return self._one_cycle(s, n)

    def _one_cycle(self, s, n):
        # torch's OneCycleLR, two phases: rise to the peak, then fall to the minimum.
        peak = self.learning_rate
        start = peak / self.div_factor
        end = start / self.final_div_factor
        rise_end = float(self.pct_start * n) - 1
        if s <= rise_end:
            lo, hi, pct = start, peak, s / rise_end if rise_end > 0 else 1.0
        else:
            lo, hi, pct = (
                peak,
                end,
                (s - rise_end) / (n - 1 - rise_end) if n - 1 > rise_end else 1.0,
            )
        return hi + (lo - hi) / 2 * (math.cos(math.pi * pct) + 1)

    def settings(self):
        """The fields as a JSON-able dict (what a checkpoint records)."""
        return asdict(self)

    @classmethod
    def from_settings(cls, settings):
        """The Schedule a settings() dict describes; ValueError for a bad or unknown field."""
        if not isinstance(settings, dict):
            raise ValueError(
                f"schedule settings must be a JSON object, got {type(settings).__name__}"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ValueError(f"schedule settings have unknown field {unknown[0]!r}")
        return cls(**settings)

    def describes_same_run(self, other):
        """Whether resuming a run of `other` under `self` gives the same rates from here on.
        A constant schedule may change its rate (the change is the user's intent); every
        other schedule must match exactly, its length included."""
        if self.kind == "constant" and other.kind == "constant":
            return self.warmup_steps == other.warmup_steps
        return self == other
