"""Arrival schedules of the load generator."""

from itertools import islice

import pytest

from qastream.devtools.arrivals import arrival_offsets


def first(n, *args, **kwargs):
    return list(islice(arrival_offsets(*args, **kwargs), n))


@pytest.mark.parametrize("rate, arrival, burst, expected", [
    (2.0, "uniform", 10, [0.0, 0.5, 1.0, 1.5, 2.0]),
    (2.0, "burst", 2, [0.0, 0.0, 1.0, 1.0, 2.0]),
    (0.0, "poisson", 10, [0.0] * 5),
    (0.0, "uniform", 10, [0.0] * 5),
])
def test_schedules(rate, arrival, burst, expected):
    assert first(5, rate, arrival, burst_size=burst) == pytest.approx(expected)


def test_poisson_has_the_mean_rate_and_is_seeded():
    offsets = first(20001, 5.0, "poisson", seed=3)
    assert offsets == first(20001, 5.0, "poisson", seed=3)
    assert offsets == sorted(offsets)
    assert offsets[-1] / 20000 == pytest.approx(0.2, rel=0.03)
    gaps = [b - a for a, b in zip(offsets, offsets[1:])]
    # Exponential gaps: about 1 - e^-1 = 63 % are shorter than the mean.
    assert sum(g < 0.2 for g in gaps) / len(gaps) == pytest.approx(0.632, abs=0.02)


@pytest.mark.parametrize("kwargs", [dict(rate=-1), dict(rate=1, arrival="steady"), dict(rate=1, burst_size=0)])
def test_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        next(arrival_offsets(**kwargs))
