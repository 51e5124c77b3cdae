import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from transferdepth.recipe import MAX_DEPTH_M, MIN_DEPTH_M, depth_to_depthnorm, depthnorm_to_depth
from transferdepth.training.losses import depth_loss, gradient_l1, ssim


def test_depthnorm_values_and_clamp_before_division():
    d = torch.tensor([0.0, 0.05, 0.1, 1.0, 2.5, 10.0, 20.0])
    dn = depth_to_depthnorm(d)
    assert torch.allclose(dn, torch.tensor([100.0, 100.0, 100.0, 10.0, 4.0, 1.0, 1.0]))
    assert MIN_DEPTH_M == 0.1 and MAX_DEPTH_M == 10.0


def test_depthnorm_roundtrip_and_guard():
    d = torch.tensor([0.1, 0.37, 1.0, 4.2, 10.0])
    assert torch.allclose(depthnorm_to_depth(depth_to_depthnorm(d)), d, rtol=1e-6)
    back = depthnorm_to_depth(torch.tensor([0.0, -3.0, 0.5, 1000.0]))
    assert torch.allclose(back, torch.tensor([10.0, 10.0, 10.0, 0.1]))
    assert torch.all(torch.isfinite(back))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ssim_matches_skimage(dtype):
    # skimage crops (win_size-1)//2 = 5 border pixels before averaging; our valid convolution never
    # computes those windows, so the plain mean of our map is the same quantity.
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 100, (2, 30, 37))
    b = np.clip(a + rng.normal(0, 20, a.shape), 0, 100)  # correlated pair
    b[1] = rng.uniform(0, 100, (30, 37))  # and an uncorrelated one
    ours_map = ssim(torch.tensor(a, dtype=dtype)[:, None], torch.tensor(b, dtype=dtype)[:, None],
                    reduction="none")
    assert ours_map.shape == (2, 1, 20, 27)
    for i in range(2):
        ref = structural_similarity(a[i], b[i], gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, data_range=100.0)
        assert abs(ours_map[i].mean().item() - ref) < 1e-4
    mean = ssim(torch.tensor(a, dtype=dtype)[:, None], torch.tensor(b, dtype=dtype)[:, None])
    assert torch.isclose(mean, ours_map.mean())


def test_ssim_identical_is_one_and_mask_weights_centres():
    x = torch.rand(1, 1, 13, 13) * 100
    assert torch.isclose(ssim(x, x), torch.tensor(1.0))
    y = x.clone()
    y[..., :, 7:] = 0.0
    smap = ssim(x, y, reduction="none")  # 3x3 map, centres at rows/cols 5..7
    mask = torch.zeros(1, 1, 13, 13, dtype=torch.bool)
    mask[0, 0, 5, 5] = True
    mask[0, 0, 7, 7] = True
    expected = (smap[0, 0, 0, 0] + smap[0, 0, 2, 2]) / 2
    assert torch.isclose(ssim(x, y, mask=mask), expected)
    with pytest.raises(ValueError, match="exceeds image size"):
        ssim(x[..., :10, :], x[..., :10, :])


def test_gradient_l1_matches_manual_forward_differences():
    pred = torch.tensor([[1.0, 2.0, 4.0], [0.0, 3.0, 3.0]])[None, None]
    target = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 9.0]])[None, None]
    valid = torch.tensor([[True, True, True], [True, True, False]])[None, None]
    # x-differences (valid pairs): row0: pred (1,2) vs target (0,0) -> |1|+|2|; row1: pred 3 vs 0 -> 3
    # (the pair touching the invalid pixel (1,2) is ignored). mean = 6/3 = 2
    # y-differences: cols 0,1: pred (-1, 1) vs target (0, 0) -> 1, 1; col 2 invalid. mean = 1
    assert gradient_l1(pred, target, valid).item() == pytest.approx(3.0)
    # all valid: x pairs add row1 (3,0) vs (0,8) -> 3, 8; y pairs add col2: pred -1 vs target 8 -> 9
    assert gradient_l1(pred, target, torch.ones_like(valid)).item() == pytest.approx(
        (1 + 2 + 3 + 8) / 4 + (1 + 1 + 9) / 3)


def test_loss_constant_images_hand_values():
    pred = torch.full((1, 1, 16, 16), 10.0)  # DepthNorm 10 = 1 m
    valid = torch.ones(1, 1, 16, 16, dtype=torch.bool)
    loss, terms = depth_loss(pred, torch.full((1, 1, 16, 16), 1.0), valid, return_terms=True)
    assert loss.item() == 0.0 and terms == {"depth": 0.0, "grad": 0.0, "ssim": 0.0, "loss": 0.0}
    # target 0.5 m -> DepthNorm 20. SSIM of constants 10 vs 20 (C1 = 1, C2 = 9, zero variances):
    # (2*10*20 + 1) * 9 / ((100 + 400 + 1) * 9) = 401/501 -> term (1 - 401/501)/2 = 50/501.
    loss, terms = depth_loss(pred, torch.full((1, 16, 16), 0.5), valid[:, 0], return_terms=True)
    assert terms["depth"] == pytest.approx(10.0)
    assert terms["grad"] == 0.0
    assert terms["ssim"] == pytest.approx(50 / 501, rel=1e-5)
    assert loss.item() == pytest.approx(0.1 * 10.0 + 50 / 501, rel=1e-5)
    loss_w = depth_loss(pred, torch.full((1, 16, 16), 0.5), valid[:, 0], w_depth=1.0, w_ssim=0.0)
    assert loss_w.item() == pytest.approx(10.0)


def _holey_batch():
    g = torch.Generator().manual_seed(1)
    pred = (torch.rand(2, 1, 20, 24, generator=g) * 50 + 1).requires_grad_()
    depth = torch.rand(2, 1, 20, 24, generator=g) * 9 + 0.5
    valid = torch.rand(2, 1, 20, 24, generator=g) > 0.3
    valid[1, 0, 4:12, 6:15] = False  # a large hole too
    return pred, depth, valid


def test_hole_values_change_neither_loss_nor_gradients():
    pred, depth, valid = _holey_batch()
    loss_a = depth_loss(pred, depth, valid)
    (grad_a,) = torch.autograd.grad(loss_a, pred)
    for fill in (0.0, 123.0, float("nan"), float("inf")):
        other = torch.where(valid, depth, torch.full_like(depth, fill))
        loss_b = depth_loss(pred, other, valid)
        (grad_b,) = torch.autograd.grad(loss_b, pred)
        assert loss_b.item() == loss_a.item()
        assert torch.equal(grad_a, grad_b)
    assert torch.all(grad_a[~valid] == 0)  # holes never train the model
    assert torch.count_nonzero(grad_a[valid]) > 0.9 * valid.sum()


def test_no_valid_pixel_gives_zero_loss_with_grad():
    pred, depth, _ = _holey_batch()
    loss = depth_loss(pred, depth, torch.zeros_like(depth, dtype=torch.bool))
    assert loss.item() == 0.0 and loss.requires_grad
    (grad,) = torch.autograd.grad(loss, pred)
    assert torch.all(grad == 0)


def test_shape_mismatch_is_a_clear_error():
    pred = torch.zeros(1, 1, 16, 16)
    with pytest.raises(ValueError, match=r"pred_depthnorm \(1, 1, 16, 16\).*depth_m \(1, 1, 32, 32\)"):
        depth_loss(pred, torch.ones(1, 1, 32, 32), torch.ones(1, 1, 32, 32, dtype=torch.bool))


def test_autocast_bf16_input_computes_in_float32():
    pred, depth, valid = _holey_batch()
    pred_bf16 = pred.detach().bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = depth_loss(pred_bf16, depth, valid)
    assert loss.dtype == torch.float32
    assert loss.item() == depth_loss(pred_bf16.float(), depth, valid).item()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    pred, depth, valid = _holey_batch()
    cpu = depth_loss(pred.detach(), depth, valid)
    with torch.autocast("cuda", dtype=torch.float16):
        gpu = depth_loss(pred.detach().cuda().half(), depth.cuda(), valid.cuda())
    assert gpu.dtype == torch.float32
    assert gpu.item() == pytest.approx(depth_loss(pred.detach().half().float(), depth, valid).item(), rel=1e-4)
    assert cpu.item() == pytest.approx(depth_loss(pred.detach().cuda(), depth.cuda(), valid.cuda()).item(),
                                       rel=1e-5)


# --- the whole loss against an independent numpy + scikit-image implementation --------------------------


def _reference_loss(pred_dn, depth_m, valid, grad_term="mean"):
    """DenseDepth's loss written from its definition (numpy float64, skimage SSIM), not from our code:
    0.1 * L1 + 1.0 * gradient L1 + 1.0 * (1 - SSIM) / 2 on DepthNorm = 10 / clip(depth, 0.1, 10);
    holes: the target holds the prediction there, nothing is averaged over them."""
    pred = pred_dn.detach().double().numpy()[:, 0]
    tgt = 10.0 / np.clip(depth_m.double().numpy()[:, 0], 0.1, 10.0)
    v = valid.numpy()[:, 0].astype(bool)
    y = np.where(v, tgt, pred)
    l1 = np.abs(pred - y)[v].mean()
    if grad_term == "mean":
        grad = 0.0
        for axis in (1, 2):
            n = pred.shape[axis]
            sl = lambda a, s, axis=axis, n=n: np.take(a, np.arange(s, s + n - 1), axis=axis)  # noqa: E731
            dp, dt = sl(pred, 1) - sl(pred, 0), sl(y, 1) - sl(y, 0)
            pair = sl(v, 1) & sl(v, 0)
            grad += np.abs(dp - dt)[pair].mean()
    else:  # tf.image.image_gradients: zero last row of dy, zero last column of dx; K.mean over pixels
        def image_gradients(a):
            dy, dx = np.zeros_like(a), np.zeros_like(a)
            dy[:, :-1, :] = a[:, 1:, :] - a[:, :-1, :]
            dx[:, :, :-1] = a[:, :, 1:] - a[:, :, :-1]
            return dy, dx

        (dyp, dxp), (dyt, dxt) = image_gradients(pred), image_gradients(y)
        pair_y, pair_x = np.zeros_like(v), np.zeros_like(v)
        pair_y[:, :-1, :] = v[:, 1:, :] & v[:, :-1, :]
        pair_x[:, :, :-1] = v[:, :, 1:] & v[:, :, :-1]
        e = np.abs(dyp - dyt) * pair_y + np.abs(dxp - dxt) * pair_x
        grad = e.sum() / v.sum()
    num = den = 0.0
    for i in range(pred.shape[0]):
        _, smap = structural_similarity(pred[i], y[i], gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                        data_range=100.0, full=True)
        w = v[i, 5:-5, 5:-5]
        num += ((1 - smap[5:-5, 5:-5]) / 2)[w].sum()
        den += w.sum()
    return 0.1 * l1 + grad + num / den


def _random_maps(holes: bool, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    pred = torch.rand(2, 1, 24, 30, generator=g) * 60 + 1  # DepthNorm, non-constant
    depth = torch.rand(2, 1, 24, 30, generator=g) * 9.8 + 0.15
    depth[0, 0, :, :15] *= 0.3  # some structure, so SSIM and gradients are not noise only
    valid = torch.ones(2, 1, 24, 30, dtype=torch.bool)
    if holes:
        valid = torch.rand(2, 1, 24, 30, generator=g) > 0.25
        valid[1, 0, 6:16, 8:20] = False
    return pred, depth, valid


@pytest.mark.parametrize("holes", [False, True], ids=["no-holes", "holes"])
@pytest.mark.parametrize("grad_term", ["mean", "tf"])
def test_depth_loss_matches_independent_reference(holes, grad_term):
    pred, depth, valid = _random_maps(holes)
    ours = depth_loss(pred, depth, valid) if grad_term == "mean" else depth_loss(pred, depth, valid, grad_term="tf")
    ref = _reference_loss(pred, depth, valid, grad_term)
    assert ours.item() == pytest.approx(ref, rel=2e-5)
    _, terms = depth_loss(pred, depth, valid, grad_term=grad_term, return_terms=True)
    assert terms["grad"] > 0.3 * terms["loss"]  # the gradient term matters in this comparison


def test_tf_grad_term_is_the_mean_term_scaled_by_the_padding():
    # all pixels valid: tf = sum|dx| / (H W) + sum|dy| / (H W); mean = sum|dx| / (H (W-1)) + sum|dy| / ((H-1) W)
    pred, depth, valid = _random_maps(False)
    tgt = depth_to_depthnorm(depth)
    h, w = pred.shape[-2:]
    sx = (pred.diff(dim=-1) - tgt.diff(dim=-1)).abs().sum().item() / 2  # per image (batch of 2)
    sy = (pred.diff(dim=-2) - tgt.diff(dim=-2)).abs().sum().item() / 2
    assert gradient_l1(pred, tgt, valid, "tf").item() == pytest.approx((sx + sy) / (h * w), rel=1e-5)
    assert gradient_l1(pred, tgt, valid).item() == pytest.approx(sx / (h * (w - 1)) + sy / ((h - 1) * w), rel=1e-5)
    with pytest.raises(ValueError, match="grad_term must be one of mean, tf"):
        depth_loss(pred, depth, valid, grad_term="keras")
