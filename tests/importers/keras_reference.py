"""DenseDepth's Keras architecture (TensorFlow / Keras 2 API via tf-keras), for the import parity test.

Written from DenseDepth's model.py and layers.py as they were in January 2019 (the released nyu.h5):
keras.applications DenseNet-169 without top (its output is the final bn + relu), conv2 1x1, up1..up4 =
BilinearUpSampling2D x2 (tf.image.resize_images, BILINEAR, align_corners=True), concat with pool3_pool /
pool2_pool / pool1 / conv1/relu, convA 3x3 [LeakyReLU(0.2) since ea4a455], convB 3x3 + LeakyReLU(0.2),
conv3 3x3 -> 1 channel (DepthNorm).

variant "2124ac9": full features (F = 1664), no activation after convA (the released nyu.h5);
variant "10a688f": half features (F = 832), LeakyReLU after convA (DenseDepth's model.py since March 2019).

Needs `pip install transferdepth[keras-parity]` (tensorflow, tf-keras); imported only by tests that
skip without it.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

# torch and torchvision before tensorflow: with torchvision imported after tensorflow, a DenseNet forward in
# torch segfaults (observed with TF 2.21, torch 2.14.1, torchvision 0.29.1 on Linux x86-64)
import torch  # noqa: E402, F401
import torchvision  # noqa: E402, F401

# isort: split
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

VARIANTS = {"2124ac9": {"half_features": False, "act_a": False},
            "10a688f": {"half_features": True, "act_a": True}}


class BilinearUpSampling2D(keras.layers.Layer):
    """DenseDepth's layers.py (commit c034c62): x2 bilinear with align_corners=True (channels_last)."""

    def __init__(self, size=(2, 2), data_format=None, align_corners=True, **kwargs):
        super().__init__(**kwargs)
        self.size = tuple(size)
        self.data_format = data_format or "channels_last"
        self.align_corners = align_corners  # False only to show the parity test notices the difference

    def call(self, inputs):
        shape = tf.shape(inputs)
        size = [self.size[0] * shape[1], self.size[1] * shape[2]]
        if self.align_corners:  # TF1's tf.image.resize_images(..., BILINEAR, align_corners=True)
            return tf.compat.v1.image.resize_bilinear(inputs, size, align_corners=True)
        return tf.image.resize(inputs, size, method="bilinear")  # TF2: half-pixel centres

    def get_config(self):
        return {**super().get_config(), "size": self.size, "data_format": self.data_format}


def build_densedepth(variant: str, align_corners: bool = True, seed: int = 0) -> keras.Model:
    """DenseDepth's create_model() for `variant` (see module docstring), random weights (Keras' initialisers,
    seeded)."""
    opts = VARIANTS[variant]
    keras.utils.set_random_seed(seed)
    base = keras.applications.DenseNet169(input_shape=(None, None, 3), include_top=False, weights=None)
    filters = int(base.layers[-1].output.shape[-1])
    if opts["half_features"]:
        filters //= 2

    def upproject(x, n, name, concat_with):
        x = BilinearUpSampling2D((2, 2), name=name + "_upsampling2d", align_corners=align_corners)(x)
        x = keras.layers.Concatenate(name=name + "_concat")([x, base.get_layer(concat_with).output])
        x = keras.layers.Conv2D(n, 3, strides=1, padding="same", name=name + "_convA")(x)
        if opts["act_a"]:
            x = keras.layers.LeakyReLU(alpha=0.2)(x)
        x = keras.layers.Conv2D(n, 3, strides=1, padding="same", name=name + "_convB")(x)
        return keras.layers.LeakyReLU(alpha=0.2)(x)

    x = keras.layers.Conv2D(filters, 1, padding="same", name="conv2")(base.output)
    x = upproject(x, filters // 2, "up1", "pool3_pool")
    x = upproject(x, filters // 4, "up2", "pool2_pool")
    x = upproject(x, filters // 8, "up3", "pool1")
    x = upproject(x, filters // 16, "up4", "conv1/relu")
    out = keras.layers.Conv2D(1, 3, strides=1, padding="same", name="conv3")(x)
    return keras.Model(inputs=base.input, outputs=out)


def randomize(model: keras.Model, calib_rgb01: np.ndarray, seed: int = 0, tiny_var_fraction: float = 0.5,
              dn_mean: float = 4.0, dn_std: float = 0.6) -> None:
    """Random but well-conditioned weights that make every import detail matter.

    Conv biases and BatchNorm gamma/beta are random; BatchNorm moving statistics are set to the batch
    statistics of `calib_rgb01` (1,H,W,3), so activations stay O(1) through the 169 layers. Then, in each
    BatchNorm, `tiny_var_fraction` of the channels get a moving variance below 1e-6 with gamma rescaled to
    keep the same function: there the epsilon (Keras 1.001e-5) dominates the denominator, so a wrong
    epsilon changes the output. conv3 is rescaled so the output DepthNorm has mean `dn_mean` and std
    `dn_std` (about 2.5 m with NYU's 10 m range), inside the range, where metres are not clamped.
    """
    rng = np.random.default_rng(seed)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D) and layer.use_bias:
            k, b = layer.get_weights()
            layer.set_weights([k, rng.normal(0, 0.05, b.shape).astype(np.float32)])
    for bn in bns:
        g, b, m, v = bn.get_weights()
        bn.set_weights([rng.uniform(0.5, 1.5, g.shape).astype(np.float32),
                        rng.normal(0, 0.2, b.shape).astype(np.float32), m, v])
        bn.momentum = 0.0  # one training-mode pass sets the moving statistics to the batch's
    model(tf.constant(calib_rgb01, tf.float32), training=True)
    for bn in bns:
        bn.momentum = 0.99
        g, b, m, v = (w.astype(np.float64) for w in bn.get_weights())
        eps = bn.epsilon
        tiny = rng.random(v.shape) < tiny_var_fraction
        v_new = np.where(tiny, rng.uniform(0, 1e-6, v.shape), v)
        g_new = g * np.sqrt(v_new + eps) / np.sqrt(v + eps)
        bn.set_weights([g_new.astype(np.float32), b.astype(np.float32), m.astype(np.float32),
                        v_new.astype(np.float32)])
    conv3 = model.get_layer("conv3")
    k, b = conv3.get_weights()
    out = model(tf.constant(calib_rgb01, tf.float32), training=False).numpy()
    mu, sd = float(out.mean()), float(out.std())
    conv3.set_weights([(k * dn_std / sd).astype(np.float32),
                       ((b - mu) * dn_std / sd + dn_mean).astype(np.float32)])


def keras_depth_m(model: keras.Model, rgb01: np.ndarray, max_depth_m: float = 10.0,
                  min_depth_m: float = 0.1) -> np.ndarray:
    """DenseDepth's utils.predict in metres: clip(maxDepth / model(x), minDepth, maxDepth); (N,H/2,W/2)."""
    dn = model(tf.constant(rgb01, tf.float32), training=False).numpy()[..., 0]
    return np.clip(max_depth_m / dn, min_depth_m, max_depth_m)
