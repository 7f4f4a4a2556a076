"""Learning-rate schedules: warm-up, decay to the end of the budget, and resolving `auto`."""

import pytest

from mt import schedule
from mt.errors import UserError


def test_auto_is_cosine_with_a_budget_and_inverse_sqrt_without():
    assert schedule.resolve("auto", max_steps=100) == "cosine"
    assert schedule.resolve("auto", max_minutes=20) == "cosine"
    assert schedule.resolve("auto") == "inverse_sqrt"


def test_a_decay_to_the_budget_needs_a_budget():
    with pytest.raises(UserError, match="max_steps or train.max_minutes"):
        schedule.resolve("linear")
    with pytest.raises(UserError, match="train.schedule must be one of"):
        schedule.resolve("exponential", max_steps=10)


def test_progress_follows_the_budget_that_is_further_along():
    assert schedule.progress(50, 0.0, max_steps=100) == 0.5
    assert schedule.progress(10, 600.0, max_steps=100, max_minutes=20) == 0.5
    assert schedule.progress(90, 600.0, max_steps=100, max_minutes=20) == 0.9
    assert schedule.progress(500, 99999.0, max_steps=100) == 1.0
    assert schedule.progress(500, 99999.0) == 0.0


@pytest.mark.parametrize("name", ["cosine", "linear", "cooldown"])
def test_budgeted_schedules_warm_up_peak_and_end_at_the_final_rate(name):
    rate = [schedule.learning_rate(name, 2e-3, step, step / 1000, 100, final=0.05) for step in range(1, 1001)]
    assert rate[0] == pytest.approx(2e-3 * 0.01, rel=0.02)  # a hundredth of the way up
    assert max(rate) == pytest.approx(rate[99]) and rate[99] > 0.9 * 2e-3
    assert all(a >= b for a, b in zip(rate[99:], rate[100:]))  # never rises after warm-up
    assert rate[-1] == pytest.approx(2e-3 * 0.05)


def test_cosine_is_half_way_down_at_half_the_budget():
    assert schedule.learning_rate("cosine", 1.0, 1000, 0.5, 10) == pytest.approx(0.5)
    assert schedule.learning_rate("linear", 1.0, 1000, 0.25, 10) == pytest.approx(0.75)


def test_inverse_sqrt_needs_no_budget():
    assert schedule.learning_rate("inverse_sqrt", 1.0, 50, 0.0, 100) == pytest.approx(0.5)
    assert schedule.learning_rate("inverse_sqrt", 1.0, 100, 0.0, 100) == pytest.approx(1.0)
    assert schedule.learning_rate("inverse_sqrt", 1.0, 400, 0.0, 100) == pytest.approx(0.5)
    assert schedule.learning_rate("constant", 1.0, 400, 0.9, 100) == 1.0


def test_cooldown_holds_the_peak_until_the_last_part_of_the_budget_then_falls_in_a_line():
    rate = [schedule.learning_rate("cooldown", 1.0, step, step / 1000, 10, final=0.0, cooldown=0.2)
            for step in range(1, 1001)]
    assert all(r == 1.0 for r in rate[9:799]) and rate[799] == pytest.approx(1.0)
    assert rate[899] == pytest.approx(0.5)  # half way through the cool-down
    assert rate[-1] == pytest.approx(0.0)
    assert schedule.resolve("cooldown", max_minutes=20) == "cooldown"
