import numpy as np
import pytest
import torch
from skimage.transform import resize as sk_resize

from transferdepth.data.base import DatasetError
from transferdepth.data.transforms import (
    DENSEDEPTH_SWAP_P,
    SWAPS,
    EvalTransform,
    TrainTransform,
    TransformedDataset,
    antialias_resize,
    channel_swap,
    downsample_half,
    masked_resize,
    normalize_images,
    resize_crop,
)

MEAN, STD = (0.5, 0.4, 0.3), (0.5, 0.2, 0.1)
K = np.array([[50.0, 0, 5.5], [0, 40.0, 2.5], [0, 0, 1]])


def make_sample(h=6, w=8, name="s"):
    """Asymmetric: red = column * 10, green = row * 10, blue = 200; depth = 1 + column; left 2 columns holes."""
    v, u = np.mgrid[0:h, 0:w]
    rgb = np.stack([u * 10, v * 10, np.full_like(u, 200)], -1).astype(np.uint8)
    depth = (1.0 + u).astype(np.float32)
    valid = u >= 2
    depth[~valid] = np.nan  # holes may hold garbage: it must never reach valid pixels
    return {"rgb": rgb, "depth": depth, "valid": valid, "intrinsics": K.copy(), "name": name}


def test_downsample_half_exact_with_holes():
    nan = np.nan
    depth = np.array([[1, 2, 3, 4], [5, nan, 7, 8], [0, 0, 1, 1], [0, 0, 2, 2]], np.float32)
    valid = np.isfinite(depth) & (depth > 0)
    d, ok = downsample_half(depth, valid)
    np.testing.assert_array_equal(ok, [[True, True], [False, True]])
    np.testing.assert_allclose(d, [[8 / 3, 5.5], [0.0, 1.5]], rtol=1e-6)
    assert d.dtype == np.float32


def test_masked_resize_does_not_bleed_holes():
    depth = np.full((6, 9), 2.0, np.float32)
    valid = np.ones((6, 9), bool)
    valid[2:4, 3:5] = False
    depth[~valid] = np.nan
    d, ok = masked_resize(depth, valid, (4, 5))
    assert ok.sum() >= 15 and not ok.all()
    np.testing.assert_allclose(d[ok], 2.0, rtol=1e-6)
    assert np.all(d[~ok] == 0) and np.isfinite(d).all()


def test_eval_shapes_dtypes_and_normalisation():
    s = make_sample()
    s["rgb"][0, 0] = (255, 0, 51)
    out = EvalTransform(MEAN, STD)(s)
    assert out["image"].shape == (3, 6, 8) and out["image"].dtype == torch.float32
    assert out["depth"].shape == (1, 3, 4) and out["depth"].dtype == torch.float32
    assert out["valid"].shape == (1, 3, 4) and out["valid"].dtype == torch.bool
    assert out["intrinsics"].dtype == torch.float64 and out["name"] == "s"
    # (255/255 - 0.5)/0.5 = 1, (0 - 0.4)/0.2 = -2, (51/255 - 0.3)/0.1 = -1
    torch.testing.assert_close(out["image"][:, 0, 0], torch.tensor([1.0, -2.0, -1.0]))
    # depth = 1 + column, block mean over columns (2c, 2c+1): c=0 invalid, then 3.5, 5.5, 7.5
    torch.testing.assert_close(out["depth"][0, 0], torch.tensor([0.0, 3.5, 5.5, 7.5]))
    assert out["valid"][0, :, 0].tolist() == [False] * 3 and out["valid"][0, :, 1:].all()


def test_unknown_intrinsics_become_nan():
    s = make_sample()
    s["intrinsics"] = None
    assert torch.isnan(EvalTransform(MEAN, STD)(s)["intrinsics"]).all()


def test_flip_moves_image_depth_and_mask_together():
    out = TrainTransform(MEAN, STD, flip_p=1.0, swap_p=0.0)(make_sample(), np.random.default_rng(0))
    red = out["image"][0] * STD[0] + MEAN[0]
    torch.testing.assert_close(red[0] * 255, torch.tensor([70.0, 60, 50, 40, 30, 20, 10, 0]))
    torch.testing.assert_close(out["depth"][0, 0], torch.tensor([7.5, 5.5, 3.5, 0.0]))
    assert out["valid"][0, :, 3].tolist() == [False] * 3 and out["valid"][0, :, :3].all()
    assert out["intrinsics"][0, 2].item() == pytest.approx(7 - 5.5)


def test_resize_crop_centre_and_intrinsics():
    s = make_sample(6, 12)
    r = resize_crop(s, (4, 4))  # scale 2/3 -> 4x8, centre crop columns 2..5
    assert r["rgb"].shape == (4, 4, 3) and r["depth"].shape == (4, 4)
    np.testing.assert_allclose(r["intrinsics"][0], [50 * 8 / 12, 0, (5.5 + 0.5) * 8 / 12 - 0.5 - 2])
    np.testing.assert_allclose(r["intrinsics"][1], [0, 40 * 4 / 6, (2.5 + 0.5) * 4 / 6 - 0.5])
    # output column j (j >= 1, away from the holes) is resized column c = j + 2, centred on source column
    # u = (c + 0.5) * 1.5 - 0.5; antialiased bilinear = triangle filter of radius 1.5 source pixels, e.g.
    # c = 3: u = 4.75, weights 0.5, 5/6, 1/6 on u = 4, 5, 6 -> depth (1 + u) = 52/9
    np.testing.assert_allclose(r["depth"][:, 1:], np.tile([52 / 9, 65 / 9, 79 / 9], (4, 1)), rtol=1e-5)
    assert r["valid"][:, 1:].all()
    out = TrainTransform(MEAN, STD, size=(4, 4))(s, np.random.default_rng(3))
    assert out["image"].shape == (3, 4, 4) and out["depth"].shape == (1, 2, 2)
    assert resize_crop(s, (6, 12)) is s


def test_swap_rate_matches_declared_probability():
    rgb = np.array([[[10, 20, 30]]], np.uint8)
    rng = np.random.default_rng(123)
    for p in (DENSEDEPTH_SWAP_P, 0.8):
        changed, seen = 0, set()
        for _ in range(4000):
            out = channel_swap(rgb, rng, p)
            if not np.array_equal(out, rgb):
                changed += 1
                seen.add(tuple(int(np.flatnonzero(rgb[0, 0] == c)[0]) for c in out[0, 0]))
        assert abs(changed / 4000 - p) < 0.03
        assert seen == set(SWAPS)
    assert DENSEDEPTH_SWAP_P == pytest.approx(0.5 * 5 / 7)


def test_train_transform_default_swap_rate():
    t = TrainTransform((0, 0, 0), (1, 1, 1), flip_p=0.0)
    s = make_sample(2, 2)
    s["valid"][:] = True
    s["depth"][:] = 1.0
    ref = torch.from_numpy(s["rgb"]).permute(2, 0, 1).float() / 255
    rng = np.random.default_rng(0)
    changed = sum(not torch.equal(t(s, rng)["image"], ref) for _ in range(3000))
    assert abs(changed / 3000 - DENSEDEPTH_SWAP_P) < 0.03


def test_transformed_dataset_is_deterministic_per_seed_epoch_index():
    data = [make_sample(name=str(i)) for i in range(8)]
    t = TrainTransform(MEAN, STD)
    a, b = TransformedDataset(data, t, seed=5), TransformedDataset(data, t, seed=5)
    b[3], b[1]
    for i in range(8):
        assert torch.equal(a[i]["image"], b[i]["image"]) and torch.equal(a[i]["depth"], b[i]["depth"])
    images0 = [a[i]["image"] for i in range(8)]
    a.set_epoch(1)
    assert any(not torch.equal(images0[i], a[i]["image"]) for i in range(8))
    a.set_epoch(0)
    assert all(torch.equal(images0[i], a[i]["image"]) for i in range(8))


def test_same_batches_with_and_without_workers():
    data = [make_sample(name=str(i)) for i in range(6)]
    ds = TransformedDataset(data, TrainTransform(MEAN, STD), seed=1)
    ds.set_epoch(2)
    batches = [list(torch.utils.data.DataLoader(ds, batch_size=3, num_workers=n)) for n in (0, 2)]
    for x, y in zip(*batches):
        assert torch.equal(x["image"], y["image"]) and x["name"] == y["name"]


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(DatasetError, match="mean and std"):
        EvalTransform((0.5, 0.5), STD)
    with pytest.raises(DatasetError, match="swap_p"):
        TrainTransform(MEAN, STD, swap_p=1.5)
    s = make_sample()
    s["depth"] = s["depth"].astype(np.float64)
    with pytest.raises(DatasetError, match="depth must be float32"):
        EvalTransform(MEAN, STD)(s)


# ---------------------------------------------------------------- target_resize (half-resolution target)

def nyu_resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """DenseDepth's nyu_resize: skimage resize with preserve_range, mode='reflect', anti_aliasing=True."""
    return sk_resize(a, size, preserve_range=True, mode="reflect", anti_aliasing=True)


def hole_free_depth(h=24, w=32, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.3, 9.5, (h, w))
    depth[:, : w // 2] = 1.0 + np.arange(h)[:, None] * 0.2  # an edge: near rows next to random far values
    return depth.astype(np.float32)


def train_target(depth, valid, **kw):
    h, w = depth.shape
    sample = {"rgb": np.zeros((h, w, 3), np.uint8), "depth": depth, "valid": valid, "intrinsics": None,
              "name": "t"}
    out = TrainTransform(MEAN, STD, flip_p=0.0, swap_p=0.0, **kw)(sample, np.random.default_rng(0))
    return out["depth"][0].numpy(), out["valid"][0].numpy()


@pytest.mark.parametrize("shape", [(24, 32), (48, 64), (25, 33)])
def test_inverse_antialias_reproduces_densedepth(shape):
    depth = hole_free_depth(*shape)
    got, ok = train_target(depth, np.ones(shape, bool), target_resize="inverse_antialias")
    # DenseDepth: y = clip(depth_cm, 0, 1000); DepthNorm(y) = 1000 / y; nyu_resize(DepthNorm(y), H/2) (in metres:
    # 10 / depth, the same ratio); our target is that map converted back to metres.
    dn_small = nyu_resize((10.0 / np.clip(depth.astype(np.float64), 0.1, 10.0))[..., None],
                          (shape[0] // 2, shape[1] // 2))[..., 0]
    assert ok.all() and got.dtype == np.float32
    np.testing.assert_allclose(got, 10.0 / dn_small, rtol=2e-6)
    mean_target, _ = train_target(depth, np.ones(shape, bool))  # the default, mask_mean, differs at edges
    assert np.abs(mean_target - got).max() > 0.05


def test_inverse_antialias_uses_the_depth_range():
    depth = hole_free_depth()
    depth[0, 0] = 30.0  # beyond max_depth=20: clipped before DepthNorm, as DenseDepth's clip does
    got, _ = train_target(depth, np.ones(depth.shape, bool), target_resize="inverse_antialias",
                          min_depth=0.5, max_depth=20.0)
    ref = 20.0 / nyu_resize(20.0 / np.clip(depth.astype(np.float64), 0.5, 20.0), (12, 16))
    np.testing.assert_allclose(got, ref, rtol=2e-6)


def test_inverse_antialias_holes_are_mask_aware():
    depth = hole_free_depth()
    valid = np.ones(depth.shape, bool)
    valid[5:9, 3:11] = False
    valid[:, -1] = False
    depth[~valid] = np.nan  # garbage in holes must not reach valid pixels
    got, ok = train_target(depth, valid, target_resize="inverse_antialias")
    dn = np.where(valid, 10.0 / np.clip(np.nan_to_num(depth).astype(np.float64), 0.1, 10.0), 0.0)
    weight = nyu_resize(valid.astype(np.float64), (12, 16))
    ref_ok = weight > 0.5
    np.testing.assert_array_equal(ok, ref_ok)
    assert 0 < ok.sum() < ok.size
    np.testing.assert_allclose(got[ok], (10.0 * weight / nyu_resize(dn, (12, 16)))[ok], rtol=2e-6)
    assert np.all(got[~ok] == 0.0) and np.isfinite(got).all()
    const, ok2 = train_target(np.where(valid, 3.0, np.nan).astype(np.float32), valid,
                              target_resize="inverse_antialias")
    np.testing.assert_allclose(const[ok2], 3.0, rtol=1e-6)


def test_mask_mean_target_is_the_block_mean_of_valid_metres():
    depth = hole_free_depth(6, 8)
    valid = np.ones((6, 8), bool)
    valid[0, 0] = valid[0, 1] = valid[1, 0] = False
    valid[2:4, 2:4] = False
    got, ok = train_target(np.where(valid, depth, -5.0).astype(np.float32), valid, target_resize="mask_mean")
    for i in range(3):
        for j in range(4):
            block, vb = depth[2 * i:2 * i + 2, 2 * j:2 * j + 2], valid[2 * i:2 * i + 2, 2 * j:2 * j + 2]
            assert ok[i, j] == vb.any()
            assert got[i, j] == pytest.approx(block[vb].mean() if vb.any() else 0.0, rel=1e-6)


def test_antialias_resize_matches_skimage_on_odd_factors():
    a = np.random.default_rng(1).uniform(0, 100, (40, 41))
    for size in ((13, 7), (40, 20), (39, 41)):
        np.testing.assert_allclose(antialias_resize(a, size), nyu_resize(a, size), rtol=1e-12, atol=1e-12)


def test_bad_target_resize_and_range():
    with pytest.raises(DatasetError, match="target_resize must be one of mask_mean, inverse_antialias"):
        TrainTransform(MEAN, STD, target_resize="bilinear")
    with pytest.raises(DatasetError, match="min_depth"):
        TrainTransform(MEAN, STD, target_resize="inverse_antialias", min_depth=5.0, max_depth=1.0)


# ---------------------------------------------------------------- uint8 images across DataLoader workers

def textured_sample(i: int, h=24, w=40) -> dict:
    rng = np.random.default_rng(i)
    depth = rng.uniform(0.5, 9.0, (h, w)).astype(np.float32)
    valid = rng.random((h, w)) > 0.1
    return {"rgb": rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "depth": np.where(valid, depth, 0.0).astype(
        np.float32), "valid": valid, "intrinsics": K.copy(), "name": str(i)}


def test_uint8_images_normalised_later_are_bit_identical():
    """TrainTransform(normalize=False) + normalize_images on the batch == TrainTransform's float images, bit for
    bit, for every augmentation (crop, flip, channel swap), and the targets are the same tensors."""
    data = [textured_sample(i) for i in range(12)]
    t_float = TrainTransform(MEAN, STD, (16, 20), swap_p=0.5)
    t_uint8 = TrainTransform(MEAN, STD, (16, 20), swap_p=0.5, normalize=False)
    a, b = TransformedDataset(data, t_float, seed=4), TransformedDataset(data, t_uint8, seed=4)
    items_a, items_b = [a[i] for i in range(12)], [b[i] for i in range(12)]
    assert all(it["image"].dtype == torch.uint8 and it["image"].shape == (3, 16, 20) for it in items_b)
    assert all(it["image"].is_contiguous() for it in items_b)
    batch = normalize_images(torch.stack([it["image"] for it in items_b]), MEAN, STD)
    assert batch.dtype == torch.float32
    assert torch.equal(batch, torch.stack([it["image"] for it in items_a]))
    for x, y in zip(items_a, items_b):
        assert torch.equal(x["depth"], y["depth"]) and torch.equal(x["valid"], y["valid"])
        assert torch.equal(x["intrinsics"], y["intrinsics"]) and x["name"] == y["name"]


def test_normalize_images_values():
    rgb = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 1, 1)
    x = normalize_images(rgb, MEAN, STD)
    expected = (torch.tensor([0.0, 0.2, 1.0]) - torch.tensor(MEAN)) / torch.tensor(STD)
    torch.testing.assert_close(x[:, :, 0, 0], expected.expand(2, 3), rtol=0, atol=1e-6)
