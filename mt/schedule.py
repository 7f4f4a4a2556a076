"""Learning-rate schedules: planned to the budget when there is one, needing none when there is not.

    constant       the peak rate after warm-up
    cosine         warm-up, then a cosine from the peak down to `final` x peak when the budget ends
    linear         warm-up, then a straight line from the peak down to `final` x peak
    cooldown       warm-up, the peak until the last `cooldown` fraction of the budget, then a straight line
                   down to `final` x peak (the rate stays high while the model is far from trained)
    inverse_sqrt   warm-up, then peak x sqrt(warmup / step): no budget needed
    auto           cosine with a budget (train.max_steps or train.max_minutes), else inverse_sqrt

Warm-up raises the rate linearly over the first `warmup_steps` updates. A budgeted schedule follows the
run's progress, a fraction in [0, 1]: steps done / max_steps, or training seconds / (60 x max_minutes),
whichever is further along, so a run planned to minutes decays with the clock and ends near zero when its
time ends. Both are pure functions of what a checkpoint records (the step and the training time spent),
so a resumed run continues the schedule where it stopped.
"""

import math

from mt.errors import UserError

SCHEDULES = ("auto", "constant", "cosine", "linear", "cooldown", "inverse_sqrt")
BUDGETED = ("cosine", "linear", "cooldown")


def resolve(name, max_steps=0, max_minutes=0.0):
    """The schedule `name` stands for under this budget ("auto" resolved); a budgeted schedule without a
    budget is a UserError."""
    if name not in SCHEDULES:
        raise UserError(f"train.schedule must be one of {', '.join(SCHEDULES)}; got {name!r}")
    budgeted = bool(max_steps or max_minutes)
    if name == "auto":
        return "cosine" if budgeted else "inverse_sqrt"
    if name in BUDGETED and not budgeted:
        raise UserError(f"train.schedule {name} decays to the end of the budget: set train.max_steps or "
                        "train.max_minutes (--max-steps, --max-minutes), or use inverse_sqrt or constant")
    return name


def progress(step, seconds, max_steps=0, max_minutes=0.0):
    """How far a run is through its budget, in [0, 1] (0 without a budget)."""
    done = 0.0
    if max_steps:
        done = max(done, step / max_steps)
    if max_minutes:
        done = max(done, seconds / (60.0 * max_minutes))
    return min(1.0, done)


def learning_rate(name, peak, step, fraction, warmup_steps, final=0.0, cooldown=0.2):
    """The rate of update number `step` (counted from 1) of schedule `name` (resolved), at budget
    progress `fraction`; `cooldown` is the last fraction of the budget over which `cooldown` decays."""
    warm = min(1.0, step / warmup_steps) if warmup_steps else 1.0
    if name == "constant":
        return peak * warm
    if name == "inverse_sqrt":
        return peak * warm if step <= warmup_steps else peak * math.sqrt(max(warmup_steps, 1) / step)
    if name == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * fraction))
    elif name == "cooldown":
        decay = min(1.0, (1.0 - fraction) / cooldown) if cooldown else 1.0
    else:
        decay = 1.0 - fraction
    return peak * warm * (final + (1.0 - final) * decay)
