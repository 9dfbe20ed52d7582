"""Optimizer settings for mnistc.model.MLP: which update rule, and its hyperparameters.

An Optimizer is only settings (immutable, JSON-able through settings()/from_settings());
the state it needs (momentum buffer, Adam's moments, the step count) lives in the model,
and the update itself is one fused C pass (mnistc.h has the formulas, torch.optim's).
The learning rate is not a setting: the trainer passes each step's rate to
MLP.train_step, so that schedules stay the trainer's.
"""

from . import _kernels

# Each optimizer's hyperparameters and their defaults (torch.optim's, except momentum,
# whose torch default of 0 would make "momentum" plain SGD).
HYPERPARAMETERS = {
    "sgd": {"weight_decay": 0.0},
    "momentum": {"momentum": 0.9, "weight_decay": 0.0},
    "nesterov": {"momentum": 0.9, "weight_decay": 0.0},
    "adam": {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0},
    "adamw": {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01},
}
NAMES = tuple(HYPERPARAMETERS)


class Optimizer:
    """An update rule and its hyperparameters.

    name: "sgd" (the default: plain SGD, fused into the backward pass unless
    weight_decay > 0), "momentum", "nesterov", "adam" or "adamw". Hyperparameters left
    out take the defaults in HYPERPARAMETERS; each is checked (finite; 0 <= momentum < 1,
    > 0 for nesterov; 0 <= beta1, beta2 < 1; eps > 0; weight_decay >= 0), with a
    ValueError or TypeError naming the bad one. weight_decay is L2 on the gradient for
    sgd, momentum, nesterov and adam, and decoupled for adamw.
    """

    __slots__ = ("_hyperparameters", "_name")

    def __init__(self, name="sgd", **hyperparameters):
        if not isinstance(name, str) or name not in HYPERPARAMETERS:
            raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(NAMES)}")
        allowed = HYPERPARAMETERS[name]
        for field in hyperparameters:
            if field not in allowed:
                raise ValueError(
                    f"optimizer {name} has no setting {field!r}; its settings "
                    f"are {', '.join(allowed)}"
                )
        values = {**allowed, **hyperparameters}
        _kernels.check_optimizer(name, **values)
        self._name = name
        self._hyperparameters = {field: float(value) for field, value in values.items()}

    @property
    def name(self):
        return self._name

    @property
    def hyperparameters(self):
        """{field: float} of this optimizer's settings (a copy)."""
        return dict(self._hyperparameters)

    @property
    def state_names(self):
        """The names of the state arrays the model keeps for this optimizer, each the
        size of the parameter block ("momentum_buffer", or "exp_avg" and "exp_avg_sq")."""
        return _kernels.OPTIMIZER_STATE[self._name]

    @property
    def stores_gradients(self):
        """Whether a step keeps a gradient block the size of the parameters: every update
        but plain SGD without weight decay, which rides in the backward pass."""
        return not (self._name == "sgd" and self._hyperparameters["weight_decay"] == 0.0)

    def settings(self):
        """{"name": ..., and every hyperparameter}: JSON-able, for checkpoint metadata."""
        return {"name": self._name, **self._hyperparameters}

    @classmethod
    def from_settings(cls, settings):
        """The Optimizer that settings() described. Every hyperparameter of the named
        optimizer must be present (so that a default changing later cannot change a
        resumed run); ValueError/TypeError naming the first bad or missing field."""
        if not isinstance(settings, dict):
            raise TypeError(f"optimizer settings must be a dict, not {type(settings).__name__}")
        if "name" not in settings:
            raise ValueError("optimizer settings have no 'name'")
        name = settings["name"]
        fields = {field: value for field, value in settings.items() if field != "name"}
        if isinstance(name, str) and name in HYPERPARAMETERS:
            for field in HYPERPARAMETERS[name]:
                if field not in fields:
                    raise ValueError(f"optimizer settings for {name} have no {field!r}")
        return cls(name, **fields)

    def __eq__(self, other):
        if not isinstance(other, Optimizer):
            return NotImplemented
        return self.settings() == other.settings()

    def __hash__(self):
        return hash(tuple(self.settings().items()))

    def __repr__(self):
        args = "".join(f", {field}={value!r}" for field, value in self._hyperparameters.items())
        return f"Optimizer({self._name!r}{args})"
