"""methods/budget.py against the golden values of seats-reference 12 and 12.3."""

from __future__ import annotations

import pytest

from methods.budget import audio_intact_reallocate, fastv_setting_ratio


def test_reallocation_example_visionzip():
    v, a = audio_intact_reallocate(0.30, 0.65, 4320, 750)
    assert a == 1.0 and v == pytest.approx((1783 - 750) / 4320) and round(v, 5) == 0.23912


def test_reallocation_example_fastv():
    sv, sa = fastv_setting_ratio(0.30, 2, 28), fastv_setting_ratio(0.65, 2, 28)
    assert (round(sv, 5), round(sa, 5)) == (0.24615, 0.62308)
    v, a = audio_intact_reallocate(sv, sa, 4320, 750)
    assert a == 1.0 and v == pytest.approx((1530 - 750) / 4320) and round(v, 5) == 0.18056


def test_reallocation_clamps():
    # total = floor(1000*0.02 + 500*0.1) = 70 < Na: video clamped to 0.05, audio gets the rest
    v, a = audio_intact_reallocate(0.02, 0.1, 1000, 500)
    assert v == 0.05 and a == pytest.approx((70 - 50) / 500)
    # a large audio share: the total cannot hold all audio, video stays at the floor
    v, a = audio_intact_reallocate(1.0, 0.5, 100, 1000)
    assert v == 0.05 and a == pytest.approx((600 - 5) / 1000)
    # both full stays full
    assert audio_intact_reallocate(1.0, 1.0, 100, 50) == (1.0, 1.0)
    # no audio, or no video: unchanged
    assert audio_intact_reallocate(0.3, 0.65, 4320, 0) == (0.3, 0.65)
    assert audio_intact_reallocate(0.3, 0.65, 0, 750) == (0.3, 0.65)


@pytest.mark.parametrize("layers,pairs", [
    (28, {(0.30, 0.65): (0.246154, 0.623077), (0.20, 0.55): (0.138462, 0.515385),
          (0.10, 0.45): (0.030769, 0.407692), (0.06, 0.35): (-0.012308, 0.300000)}),
    (48, {(0.32, 0.70): (0.290435, 0.686957), (0.22, 0.60): (0.186087, 0.582609),
          (0.12, 0.50): (0.081739, 0.478261), (0.07, 0.45): (0.029565, 0.426087)}),
])
def test_fastv_conversion_tables(layers, pairs):
    for (v, a), (sv, sa) in pairs.items():
        assert round(fastv_setting_ratio(v, 2, layers), 6) == sv
        assert round(fastv_setting_ratio(a, 2, layers), 6) == sa


def test_fastv_k_out_of_range():
    with pytest.raises(ValueError, match="fastv_k=28"):
        fastv_setting_ratio(0.3, 28, 28)
