"""Synthetic image domains as attributes: named transforms, composed by a multi-hot vector.

A *domain* of K named transforms (e.g. `("inverted", "thick", "rot90")`) is an attribute
vector c in {0, 1}^K; `apply_domain(x, c, names)` applies every transform whose attribute is
set. Transforms are pure JAX functions on float images in [-1, 1], `[B, H, W, C]`:

| name      | x ->                                                                    |
|-----------|-------------------------------------------------------------------------|
| thick     | max_{|di|,|dj| <= 1} x[i + di, j + dj]: a 3x3 grey dilation (max-pool,    |
|           | stride 1, 'same' size, the border padded with -inf, i.e. never chosen)   |
| edges     | the Sobel gradient magnitude / 4 of each channel on the 0..255 scale,   |
|           | clipped to 0..255 (borders mirrored): white stroke outlines on black,   |
|           | `jgen.data.derived.sobel_edges` of a gray image, unrounded               |
| rot90     | the image rotated 90 degrees counter-clockwise (`np.rot90` of H, W)     |
| hflip     | the image mirrored left-right                                           |
| inverted  | -x                                                                      |

Ink polarity: in the digits data (scikit-learn's digits, MNIST) ink is *bright*: +1 is the
stroke, -1 the background, so the dilation of the clean image thickens the strokes.

Composition order is fixed, whatever the order of `names` (which only says which attribute
index means which transform): `ORDER = ("thick", "edges", "rot90", "hflip", "inverted")`.
Dilation comes first so that "thick" always thickens the ink (a dilation after inversion would
grow the now-bright background, i.e. thin the strokes), then the outline of the (thickened)
strokes; rot90 and hflip commute with both (the 3x3 windows and the borders are symmetric, and
the Sobel magnitude is invariant to swapping or negating its two gradients), inversion commutes
with the geometric transforms, and hflip after rot90 is a reflection about the anti-diagonal.
So

    apply_domain(x, c) = inverted^{c_inv} o hflip^{c_flip} o rot90^{c_rot} o edges^{c_edges}
                         o thick^{c_thick} (x).

*Local* transforms (thick, edges) change each pixel from its 3x3 neighbourhood, as the
attribute edits of StarGAN's paper (hair colour, age) change a face in place; *global* ones
(inverted, rot90, hflip) change every pixel's value or position.

`apply_domain` is vectorised over the batch: each transform runs on the whole batch and
`jnp.where` keeps it for the examples whose attribute is set (K transforms per call, not 2^K).
StarGAN's digits task (`jgen.gan.stargan`) builds its domains on the fly with this: the real
images come in a random domain, and the true translation of a clean digit into any domain is
`apply_domain(clean, c_trg)`, so translation error is measurable.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["CLEAN", "ORDER", "TRANSFORMS", "all_domains", "apply_domain", "check_names",
           "domain_name", "edges", "hflip", "inverted", "rot90", "thick"]

CLEAN = "clean"  # the name of the all-zero domain (no transform)


def inverted(x: jax.Array) -> jax.Array:
  """-x: bright ink on dark becomes dark ink on bright."""
  return -x


def thick(x: jax.Array) -> jax.Array:
  """3x3 grey dilation, y[i, j] = max over the 3x3 window around (i, j), per channel (border
  padded with -inf, so it never wins): bright strokes grow by one pixel on every side."""
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 1, 1, 1), "SAME")


def edges(x: jax.Array) -> jax.Array:
  """Sobel magnitude / 4 per channel on the 0..255 scale, clipped, back in [-1, 1].

  With u = 127.5 (x + 1) padded by mirroring (`np.pad` 'symmetric', scipy's 'reflect'),
  g_y = [1, 2, 1]-smoothed u[i + 1] - u[i - 1] and g_x likewise across columns; the result is
  min(sqrt(g_x^2 + g_y^2) / 4, 255) / 127.5 - 1 (a step of height h gives h).
  """
  u = jnp.pad(127.5 * (x + 1.0), ((0, 0), (1, 1), (1, 1), (0, 0)), mode="symmetric")
  dy = u[:, 2:] - u[:, :-2]
  gy = dy[:, :, :-2] + 2 * dy[:, :, 1:-1] + dy[:, :, 2:]
  dx = u[:, :, 2:] - u[:, :, :-2]
  gx = dx[:, :-2] + 2 * dx[:, 1:-1] + dx[:, 2:]
  magnitude = jnp.sqrt(gx * gx + gy * gy + 1e-12) / 4.0
  return jnp.minimum(magnitude, 255.0) / 127.5 - 1.0


def rot90(x: jax.Array) -> jax.Array:
  """Rotation by 90 degrees counter-clockwise of every image (`np.rot90(img, 1, (0, 1))`).

  Raises:
    ValueError: the images are not square (the domain would change the shape).
  """
  if x.shape[1] != x.shape[2]:
    raise ValueError(f"rot90 needs square images, got H x W = {x.shape[1]} x {x.shape[2]}")
  return jnp.rot90(x, k=1, axes=(1, 2))


def hflip(x: jax.Array) -> jax.Array:
  """Left-right mirror image."""
  return x[:, :, ::-1, :]


TRANSFORMS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "thick": thick, "edges": edges, "rot90": rot90, "hflip": hflip, "inverted": inverted}
ORDER = ("thick", "edges", "rot90", "hflip", "inverted")  # the composition order of apply_domain


def check_names(names: Sequence[str]) -> tuple[str, ...]:
  """`names` as a tuple, checked: known transforms, no repeats, at least one.

  Raises:
    ValueError: an unknown or repeated name, or no names.
  """
  names = tuple(names)
  if not names:
    raise ValueError(f"a domain needs at least one transform; choose from {ORDER}")
  unknown = [n for n in names if n not in TRANSFORMS]
  if unknown:
    raise ValueError(f"unknown domain transform(s) {unknown}; choose from {ORDER}")
  if len(set(names)) != len(names):
    raise ValueError(f"domain transforms repeat: {names}")
  return names


def apply_domain(images: jax.Array, attrs: jax.Array, names: Sequence[str]) -> jax.Array:
  """Every image in the domain of its own attribute vector.

  y_b = T_{ORDER[-1]}^{c_b} o ... o T_{ORDER[0]}^{c_b} (x_b), where T^{c} is T when the
  attribute of T in `names` is set in c (> 0.5) and the identity otherwise.

  Args:
    images: float `[B, H, W, C]` in [-1, 1] (the clean images).
    attrs: `[B, K]` in {0, 1} (float or int), column k the attribute `names[k]`.
    names: the K transform names (`TRANSFORMS`), in attribute order.

  Returns:
    `[B, H, W, C]`, the same dtype as `images`.
  """
  names = check_names(names)
  if attrs.ndim != 2 or attrs.shape != (images.shape[0], len(names)):
    raise ValueError(f"attrs must be [B, K] = [{images.shape[0]}, {len(names)}] for domains "
                     f"{names}, got shape {tuple(attrs.shape)}")
  x = images
  for name in ORDER:
    if name in names:
      on = attrs[:, names.index(name)] > 0.5
      x = jnp.where(on[:, None, None, None], TRANSFORMS[name](x), x)
  return x


def all_domains(k: int) -> np.ndarray:
  """The 2^k attribute vectors, float32 `[2^k, k]`, in binary counting order with attribute 0
  the fastest (row 0 the clean domain, row 1 attribute 0 alone, row 2 attribute 1 alone ...)."""
  rows = [bits[::-1] for bits in itertools.product((0.0, 1.0), repeat=k)]
  return np.asarray(rows, np.float32).reshape(2 ** k, k)


def domain_name(attrs: Sequence[float], names: Sequence[str]) -> str:
  """'+'-joined names of the set attributes ('thick+rot90'), or `CLEAN` for none."""
  on = [n for n, a in zip(names, attrs) if a > 0.5]
  return "+".join(on) if on else CLEAN
