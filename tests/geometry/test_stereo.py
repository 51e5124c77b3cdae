"""Depth-image-based stereo rendering on a synthetic scene with known depth: shifts, occlusion, holes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from transferdepth.geometry.stereo import StereoOptions, compose, render_stereo, stereo_image

H, W, FX, B = 40, 200, 400.0, 0.065
Z_BACK, Z_FRONT = 4.0, 1.0  # disparities B*FX/Z: 6.5 px and 26 px
FRONT = (slice(10, 30), slice(80, 120))  # rows, columns of the near rectangle


def scene():
    """Background plane at 4 m, a rectangle at 1 m. Colour encodes the source column (red = u, green = u // 256)
    and the surface (blue 0 = background, 255 = front), so each output pixel tells where it came from."""
    u = np.broadcast_to(np.arange(W), (H, W))
    rgb = np.stack([u % 256, u // 256 + 1, np.zeros_like(u)], axis=2).astype(np.uint8)
    depth = np.full((H, W), Z_BACK)
    depth[FRONT] = Z_FRONT
    rgb[FRONT + (2,)] = 255
    return rgb, depth


def source_column(view):
    return view[..., 0].astype(int) + 256 * (view[..., 1].astype(int) - 1)


@pytest.mark.parametrize("convergence", [math.inf, 2.0])
def test_planes_shift_by_baseline_f_over_z(convergence):
    rgb, depth = scene()
    left, right, lh, rh = render_stereo(rgb, depth, FX, B, convergence)
    s = 0.0 if math.isinf(convergence) else B * FX / convergence
    cols = np.broadcast_to(np.arange(W), (H, W))
    for view, holes, sign in ((left, lh, 1), (right, rh, -1)):
        for marker, z in ((0, Z_BACK), (255, Z_FRONT)):
            on = ~holes & (view[..., 2] == marker)
            assert on.sum() > 100
            shift = cols[on] - source_column(view)[on]  # where it landed minus where it came from
            np.testing.assert_allclose(shift, sign * (B * FX / z - s) / 2, atol=0.5 + 1e-9)
    # the left/right parallax of each plane: baseline * f / Z (minus the convergence shift), within 1 pixel
    for marker, z, rows in ((0, Z_BACK, (5, 20)), (255, Z_FRONT, (20,))):
        for row in rows:
            lu = {c: u for u, c in enumerate(source_column(left)[row]) if left[row, u, 2] == marker and not lh[row, u]}
            ru = {c: u for u, c in enumerate(source_column(right)[row]) if right[row, u, 2] == marker and not rh[row, u]}
            common = sorted(set(lu) & set(ru))
            assert common
            parallax = np.array([lu[c] - ru[c] for c in common])
            assert np.all(np.abs(parallax - (B * FX / z - s)) <= 1.0)


def test_near_occludes_far_and_every_hole_is_filled_from_the_background():
    rgb, depth = scene()
    left, right, lh, rh = render_stereo(rgb, depth, FX, B)
    # each eye sees the rectangle shifted 13 px and the background 3.25 px; in the left view the rectangle
    # covers columns 80+13 .. 119+13 and hides the background that lands there too
    rows = slice(12, 28)
    assert np.all(left[rows, 94:132, 2] == 255)
    assert np.all(right[rows, 68:106, 2] == 255)
    # disocclusion: the left view uncovers a band left of the rectangle (background moved only 3.25 px)
    assert lh[rows].any() and rh[rows].any()
    for view, holes in ((left, lh), (right, rh)):
        assert np.all(view[holes][:, 2] == 0)  # filled from the background, never the front surface
        assert np.all(view[..., 1] >= 1)  # no pixel left at the zero fill value (green is >= 1 in the scene)
    # columns 83..92 of the left view: right of where the background beside the rectangle lands (u + 3.25),
    # left of where the rectangle lands (u + 13): seen by the left eye only, so holes
    assert lh[rows, 83:93].all() and not lh[rows, 93:].any()


def test_layouts_and_options():
    rgb, depth = scene()
    left, right, _, _ = render_stereo(rgb, depth, FX, B)
    assert compose(left, right, "sbs").shape == (H, 2 * W, 3)
    assert compose(left, right, "tab").shape == (2 * H, W, 3)
    ana = compose(left, right, "anaglyph")
    np.testing.assert_array_equal(ana[..., 0], left[..., 0])
    np.testing.assert_array_equal(ana[..., 1:], right[..., 1:])
    # default convergence: the median depth (the background here) has zero parallax
    img = stereo_image(rgb, depth, FX, StereoOptions())
    np.testing.assert_array_equal(img[:5, :W], img[:5, W:])
    with pytest.raises(ValueError, match="--stereo: unknown layout 'vr'"):
        StereoOptions(layout="vr")
    with pytest.raises(ValueError, match="--baseline"):
        StereoOptions(baseline_m=0.0)


def test_default_convergence_is_the_median_depth_not_the_mean():
    """A scene mostly at 1 m with a far wall at 20 m in one corner: the median (1 m) and the mean (about 3.9 m)
    differ by many pixels of parallax; the default puts the median plane on the screen (zero parallax)."""
    from transferdepth.geometry.stereo import convergence_for

    rgb, _ = scene()
    depth = np.full((H, W), 1.0)
    depth[:, :30] = 20.0  # 15% of the pixels
    assert convergence_for(depth, None) == 1.0
    assert convergence_for(np.where(depth > 10, np.nan, depth), None) == 1.0  # non-finite pixels ignored
    left, right, lh, rh = render_stereo(rgb, depth, FX, B, convergence_for(depth, None))
    img = stereo_image(rgb, depth, FX, StereoOptions())
    np.testing.assert_array_equal(img, compose(left, right, "sbs"))
    # at 1 m the two views coincide (zero parallax): columns away from the wall's edge are unshifted
    np.testing.assert_array_equal(img[:, 60:W], img[:, W + 60:])
    np.testing.assert_array_equal(source_column(img[:, 60:W]), np.broadcast_to(np.arange(60, W), (H, W - 60)))


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan")])
def test_convergence_must_be_a_positive_distance(value):
    with pytest.raises(ValueError, match="--convergence: need a positive distance in metres"):
        StereoOptions(convergence_m=value)
    assert StereoOptions(convergence_m=math.inf).convergence_m == math.inf
