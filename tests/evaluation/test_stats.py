"""Seed statistics against textbook values (Student-t table) and hand arithmetic."""

from __future__ import annotations

import math

import pytest

from transferdepth.evaluation.stats import paired_difference, summarize, t_quantile


def test_t_quantiles_match_the_table():
    # Two-sided 95% critical values from any t table.
    assert t_quantile(1) == pytest.approx(12.706, abs=1e-3)
    assert t_quantile(2) == pytest.approx(4.303, abs=1e-3)
    assert t_quantile(4) == pytest.approx(2.776, abs=1e-3)
    assert t_quantile(30) == pytest.approx(2.042, abs=1e-3)


def test_summary_by_hand():
    s = summarize([1.0, 2.0, 3.0])
    assert s.n == 3 and s.mean == 2.0 and s.sd == pytest.approx(1.0)
    half = 4.302653 * 1.0 / math.sqrt(3)
    assert s.lo == pytest.approx(2.0 - half, abs=1e-5) and s.hi == pytest.approx(2.0 + half, abs=1e-5)
    assert s.text(2) == "2.00 ± 1.00 [-0.48, 4.48]"


def test_one_run_has_no_spread_and_nan_is_refused():
    s = summarize([0.7])
    assert s.mean == 0.7 and math.isnan(s.sd) and math.isnan(s.lo) and s.text() == "0.700"
    with pytest.raises(ValueError, match="non-finite"):
        summarize([0.1, float("nan")])
    with pytest.raises(ValueError, match="non-empty"):
        summarize([])


def test_paired_difference_removes_the_shared_seed_effect():
    # Seed effects (+0.1, -0.2, +0.05) shared by both arms; the true difference is 0.03 each time.
    base = [0.70, 0.40, 0.65]
    other = [b + 0.03 for b in base]
    d = paired_difference(other, base)
    assert d.mean == pytest.approx(0.03) and d.sd == pytest.approx(0.0, abs=1e-12)
    unpaired = summarize(other).mean - summarize(base).mean
    assert unpaired == pytest.approx(0.03)
    assert summarize(other).sd > 0.1  # the unpaired spread is the seed's, not the encoder's
    with pytest.raises(ValueError, match="pair runs by seed"):
        paired_difference([1.0, 2.0], [1.0])
