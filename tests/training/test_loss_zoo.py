"""The loss zoo (silog, berhu, ssi; densedepth in any output space), each against its formula computed
independently here in numpy on the valid pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transferdepth.training.losses import (
    LOSSES,
    berhu_loss,
    compute_loss,
    densedepth_loss,
    depth_loss,
    silog_loss,
    ssi_loss,
    to_space,
)


def _batch(seed=0, n=2, h=24, w=32):
    rng = np.random.default_rng(seed)
    target = rng.uniform(0.5, 8.0, (n, 1, h, w))
    pred_m = target * rng.uniform(0.7, 1.4, target.shape) + rng.normal(0, 0.1, target.shape).clip(-0.3, 0.3)
    valid = rng.random(target.shape) > 0.25
    return pred_m.astype(np.float64), target, valid


def _t(a, dtype=torch.float64):
    return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)


def test_silog_matches_the_formula():
    pred_m, target, valid = _batch(1)
    g = np.log(pred_m[valid]) - np.log(target[valid])
    expected = 10.0 * np.sqrt(np.mean(g ** 2) - 0.85 * np.mean(g) ** 2)
    loss, _ = silog_loss(_t(np.log(pred_m)), _t(target), _t(valid, torch.bool), space="log")
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # the same prediction given in metres or DepthNorm gives the same value
    for space, v in (("metric", pred_m), ("depthnorm", 10.0 / pred_m), ("disparity", 1.0 / pred_m)):
        other, _ = silog_loss(_t(v), _t(target), _t(valid, torch.bool), space=space)
        assert other.item() == pytest.approx(expected, rel=1e-6)


def test_silog_is_invariant_to_a_global_scale_only_through_its_variance_term():
    pred_m, target, valid = _batch(2)
    a, _ = silog_loss(_t(pred_m), _t(target), _t(valid, torch.bool), space="metric", variance_focus=1.0)
    b, _ = silog_loss(_t(pred_m * 3.0), _t(target), _t(valid, torch.bool), space="metric", variance_focus=1.0)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)  # lambda = 1: fully scale invariant


def test_berhu_matches_the_formula():
    pred_m, target, valid = _batch(3)
    r = pred_m[valid] - target[valid]
    c = 0.2 * np.abs(r).max()
    expected = np.mean(np.where(np.abs(r) <= c, np.abs(r), (r ** 2 + c ** 2) / (2 * c)))
    loss, _ = berhu_loss(_t(pred_m), _t(target), _t(valid, torch.bool), space="metric")
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert (np.abs(r) > c).any() and (np.abs(r) <= c).any()  # both branches are exercised


def _ssi_reference(pred_disp, target_m, valid, alpha=0.5, scales=4):
    t = 1.0 / target_m
    p_n, t_n = np.zeros_like(pred_disp), np.zeros_like(t)
    for i in range(pred_disp.shape[0]):
        m = valid[i]
        for src, dst in ((pred_disp, p_n), (t, t_n)):
            v = src[i][m]
            # torch.median returns the lower of the two middle values for an even count
            med = np.sort(v)[(v.size - 1) // 2]
            mad = np.mean(np.abs(v - med))
            dst[i] = (src[i] - med) / mad
    M = valid.sum()
    data = np.abs(p_n - t_n)[valid].sum() / (2 * M)
    r = (p_n - t_n) * valid
    reg = 0.0
    for k in range(scales):
        s = 2 ** k
        rk, vk = r[..., ::s, ::s], valid[..., ::s, ::s].astype(float)
        dx = np.abs(np.diff(rk, axis=-1)) * vk[..., 1:] * vk[..., :-1]
        dy = np.abs(np.diff(rk, axis=-2)) * vk[..., 1:, :] * vk[..., :-1, :]
        reg += (dx.sum() + dy.sum()) / vk.sum()
    return data + alpha * reg


def test_ssi_matches_the_formula_and_ignores_scale_and_shift():
    pred_m, target, valid = _batch(4)
    disp = 1.0 / pred_m
    expected = _ssi_reference(disp, target, valid)
    loss, _ = ssi_loss(_t(disp), _t(target), _t(valid, torch.bool), space="disparity")
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    shifted, _ = ssi_loss(_t(3.0 * disp + 0.7), _t(target), _t(valid, torch.bool), space="disparity")
    assert shifted.item() == pytest.approx(expected, rel=1e-6)
    exact, _ = ssi_loss(_t(2.0 / target + 0.1), _t(target), _t(valid, torch.bool), space="disparity")
    assert exact.item() < 1e-5  # a prediction right up to scale and shift has zero loss (float32)


def test_densedepth_loss_in_another_space_is_depth_loss_on_depthnorm():
    pred_m, target, valid = _batch(5)
    a, _ = densedepth_loss(_t(pred_m, torch.float32), _t(target, torch.float32), _t(valid, torch.bool),
                           space="metric", max_depth=10.0)
    b = depth_loss(_t(10.0 / pred_m, torch.float32), _t(target, torch.float32), _t(valid, torch.bool))
    assert a.item() == pytest.approx(b.item(), rel=1e-5)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_gives_zero_gradient_in_holes_and_a_finite_loss(name):
    pred_m, target, valid = _batch(6)
    space = LOSSES[name][1]
    v = to_space(_t(pred_m, torch.float32), "metric", space, 10.0).detach().requires_grad_(True)
    target_t = _t(target, torch.float32)
    target_t[~_t(valid, torch.bool)] = float("nan")  # holes may hold anything
    loss, terms = compute_loss(name, v, target_t, _t(valid, torch.bool), space=space)
    loss.backward()
    assert np.isfinite(terms["loss"]) and torch.isfinite(v.grad).all()
    assert (v.grad[~_t(valid, torch.bool)] == 0).all()


def test_an_unknown_loss_lists_the_registered_ones():
    with pytest.raises(ValueError) as e:
        compute_loss("l2", torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4), torch.ones(1, 1, 4, 4, dtype=torch.bool),
                     space="depthnorm")
    assert all(n in str(e.value) for n in LOSSES)
