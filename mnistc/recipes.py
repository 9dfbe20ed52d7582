"""Named training recipes: sets of TrainConfig settings chosen for a purpose.

`tutorial` is TrainConfig's defaults, the Mechanics 101 run. `fast` is the quickest way
this project found to a >= 98% MNIST test accuracy on a CPU; it was chosen on the
validation split only (README, "Recipes", says how). Explicit options override a
recipe's values (TrainConfig.from_recipe).
"""

RECIPES = {
    "tutorial": {},
    "fast": {
        "hidden": (128, 128),
        "batch_size": 128,
        "optimizer": "nesterov",
        "momentum": 0.9,
        "schedule": "one-cycle",
        "learning_rate": 0.2,
        "label_smoothing": 0.1,
        "epochs": 5,
        "checkpoint_every_epochs": 0,
        "eval_splits": ("validation", "test"),
    },
}

# How each setting is spelled on the command line, for the line that shows a recipe.
_FLAGS = {
    "hidden": lambda v: f"--hidden {','.join(map(str, v))}",
    "eval_splits": lambda v: f"--eval-splits {','.join(v)}",
}


def get(name):
    """The settings of recipe `name`; ValueError listing the known ones otherwise."""
    try:
        return RECIPES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown recipe {name!r}; expected one of {', '.join(RECIPES)}") from None


def describe(name, config):
    """One line: what recipe `name` expanded to in `config` (the settings the recipe sets,
    as flags) and which of them the caller's own options changed."""

    def flag(key):
        value = getattr(config, key)
        spell = _FLAGS.get(key)
        return (
            spell(value)
            if spell
            else f"--{key.replace('_', '-')} {value:g}"
            if isinstance(value, float)
            else f"--{key.replace('_', '-')} {value}"
        )

    recipe = get(name)
    keys = [k for k in recipe if getattr(config, k) is not None]
    if config.max_steps is not None and "max_steps" not in recipe:
        keys.append("max_steps")
    changed = [k for k in keys if recipe.get(k) != getattr(config, k)]
    line = f"Recipe {name}: " + (" ".join(flag(k) for k in keys) or "(the defaults)")
    if changed:
        line += " (from the command line: " + " ".join(flag(k) for k in changed) + ")"
    return line
