"""Structured similarity matching: local receptive fields and lateral
neighbourhoods on an image grid."""

import numbers

import keras
import numpy as np
from keras import ops

from keras_hebb import _checks
from keras_hebb.layers.similarity_matching import SimilarityMatching


@keras.saving.register_keras_serializable(package="keras_hebb")
class StructuredSimilarityMatching(SimilarityMatching):
    """Structured similarity matching on an image grid (local connectivity).

    The neurons sit on a grid of sites, `filters` neurons per site. Site
    `(a, b)` sees only the `kernel_size x kernel_size` input patch starting
    at `(a * strides, b * strides)` (all channels; "valid" placement, so the
    grid is `(H - kernel_size) // strides + 1` sites high), and is laterally
    connected only to the neurons of sites `(a', b')` with
    `max(|a - a'|, |b - b'|) <= lateral_radius` (including its own site).
    Weights are not shared between sites (unlike a convolution). The
    objective and the rules are those of `SimilarityMatching` with the
    connectivity masks `C^W` (receptive fields) and `C^M` (lateral
    neighbourhoods) applied: only existing synapses exist and learn,

        W += eta C^W * (y x^T - W),   M += (eta / tau) C^M * (y y^T - M).

    `kernel` and `lateral` are stored as dense masked matrices (size
    `H*W*C x sites*filters` and `(sites*filters)^2`): meant for small images
    such as 28x28 Fashion-MNIST.

    Example:

    >>> layer = StructuredSimilarityMatching(4, kernel_size=8, strides=4)
    >>> layer(np.random.rand(2, 28, 28, 1).astype("float32")).shape
    (2, 6, 6, 4)

    Args:
        filters: neurons per site.
        kernel_size: side of each site's receptive field. Defaults to `8`.
        strides: distance between neighbouring sites' fields. Defaults
            to `4`.
        lateral_radius: Chebyshev radius (in sites) of the lateral
            connections; `0` connects only neurons of the same site.
            Defaults to `1`.
        non_negative: outputs `y >= 0`. Defaults to `True`.
        **kwargs: the other arguments of `SimilarityMatching` (`tau`,
            `iterations`, `tolerance`, `kernel_initializer`,
            `train_by_backprop`) and base layer keyword arguments.

    Call arguments:
        inputs: NHWC images.

    Returns:
        `(batch, sites_high, sites_wide, filters)`.

    Reference:
        Obeid, Ramambason, Pehlevan, "Structured and Deep Similarity Matching
        via Structured and Deep Hebbian Networks", NeurIPS 2019.
    """

    def __init__(self, filters, kernel_size=8, strides=4, lateral_radius=1,
                 non_negative=True, **kwargs):
        kwargs.pop("units", None)
        super().__init__(units=1, non_negative=non_negative, **kwargs)
        self.filters_per_site = _checks.check_positive_int("filters", filters)
        self.kernel_size = _checks.check_positive_int("kernel_size", kernel_size)
        self.strides = _checks.check_positive_int("strides", strides)
        ok = isinstance(lateral_radius, numbers.Integral) and lateral_radius >= 0
        if not ok or isinstance(lateral_radius, bool):
            raise ValueError(
                "Invalid value for `lateral_radius`: expected an integer >= 0. "
                f"Received: lateral_radius={lateral_radius!r}"
            )
        self.lateral_radius = int(lateral_radius)
        self.grid = None
        self.image_shape = None

    def _grid(self, input_shape):
        _checks.check_image_rank(self, input_shape)
        height, width = input_shape[1], input_shape[2]
        if height is None or width is None or input_shape[3] is None:
            raise ValueError(
                f"Layer '{self.name}' needs a known image size. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        if height < self.kernel_size or width < self.kernel_size:
            raise ValueError(
                f"Invalid value for `kernel_size`: larger than the "
                f"{height}x{width} image. Received: kernel_size="
                f"{self.kernel_size}"
            )
        return ((height - self.kernel_size) // self.strides + 1,
                (width - self.kernel_size) // self.strides + 1)

    def _masks(self, input_shape):
        _, height, width, channels = input_shape
        rows, cols = self._grid(input_shape)
        f = self.filters_per_site
        ff = np.zeros((height, width, channels, rows, cols, f), "float32")
        for a in range(rows):
            for b in range(cols):
                top, left = a * self.strides, b * self.strides
                ff[top:top + self.kernel_size, left:left + self.kernel_size,
                   :, a, b, :] = 1.0
        site_a, site_b = np.meshgrid(np.arange(rows), np.arange(cols),
                                     indexing="ij")
        near = np.maximum(
            np.abs(site_a.reshape(-1, 1) - site_a.reshape(1, -1)),
            np.abs(site_b.reshape(-1, 1) - site_b.reshape(1, -1)),
        ) <= self.lateral_radius
        lat = np.kron(near.astype("float32"), np.ones((f, f), "float32"))
        return ff.reshape(height * width * channels, -1), lat

    def build(self, input_shape):
        self.grid = self._grid(input_shape)
        self.image_shape = tuple(int(d) for d in input_shape[1:])
        self.units = self.grid[0] * self.grid[1] * self.filters_per_site
        super().build(input_shape)

    def _shape_output(self, y):
        return ops.reshape(y, (ops.shape(y)[0], *self.grid,
                               self.filters_per_site))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self._grid(input_shape), self.filters_per_site)

    def receptive_fields(self):
        """Each neuron's feedforward weights as an image patch (numpy).

        Returns `(rows, cols, filters, kernel_size, kernel_size, channels)`.
        """
        kernel = ops.convert_to_numpy(self.kernel)
        image = kernel.reshape(*self.image_shape, *self.grid,
                               self.filters_per_site)
        channels = self.image_shape[-1]
        k = self.kernel_size
        out = np.zeros((*self.grid, self.filters_per_site, k, k, channels),
                       "float32")
        for a in range(self.grid[0]):
            for b in range(self.grid[1]):
                top, left = a * self.strides, b * self.strides
                patch = image[top:top + k, left:left + k, :, a, b, :]
                out[a, b] = np.transpose(patch, (3, 0, 1, 2))
        return out

    def get_config(self):
        config = super().get_config()
        config.pop("units")
        return {
            **config,
            "filters": self.filters_per_site,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "lateral_radius": self.lateral_radius,
        }
