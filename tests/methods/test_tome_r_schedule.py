"""tome_r_schedule follows ToMe's conventions: int = constant, tuple = (r, inflection), list = per layer."""

import pytest

from vtcompress.merge import tome_r_schedule


@pytest.mark.parametrize("inflection", [-1, -1.0])
def test_decreasing_schedule_with_int_or_float_inflection(inflection):
    # ToMe's "decreasing schedule": from 2r down to 0 in equal steps
    assert tome_r_schedule(5, (8, inflection)) == [16, 12, 8, 4, 0]


@pytest.mark.parametrize("inflection", [0, 0.0])
def test_zero_inflection_is_a_constant_r(inflection):
    assert tome_r_schedule(4, (8, inflection)) == [8, 8, 8, 8] == tome_r_schedule(4, 8)


def test_increasing_and_partial_inflections():
    assert tome_r_schedule(5, (8, 1)) == [0, 4, 8, 12, 16]
    assert tome_r_schedule(3, (8, 0.5)) == [4, 8, 12]
    assert tome_r_schedule(3, (8, -0.5)) == [12, 8, 4]
    assert tome_r_schedule(1, (8, -1)) == [16]  # one layer: the first value


@pytest.mark.parametrize("r", [1, 3, 8, 13])
@pytest.mark.parametrize("inflection", [-1, -0.7, -0.25, 0, 0.3, 1])
def test_schedules_are_never_negative_and_keep_about_the_constant_total(r, inflection):
    layers = 23
    schedule = tome_r_schedule(layers, (r, inflection))
    assert len(schedule) == layers and min(schedule) >= 0
    assert abs(sum(schedule) - r * layers) <= layers  # int truncation loses < 1 a layer


def test_lists_give_r_per_layer():
    assert tome_r_schedule(3, [1, 2]) == [1, 2, 0]
    assert tome_r_schedule(2, [5, 0]) == [5, 0]


@pytest.mark.parametrize(
    "r, match",
    [
        ((8, 2.0), "inflection"),
        ((8, -1.5), "inflection"),
        ((8, "down"), "inflection"),
        ((8, -1, 0), r"\(r, inflection\) pair"),
        ((-4, 0.5), "r must be an int >= 0"),
        (-4, "r must be an int >= 0"),
        (2.5, "r must be an int >= 0"),
        ([3, -1], "r must be an int >= 0"),
    ],
)
def test_bad_schedules_raise(r, match):
    with pytest.raises(ValueError, match=match):
        tome_r_schedule(4, r)
