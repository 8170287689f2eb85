"""Adaptive discriminator augmentation (Karras et al. 2020, "Training Generative Adversarial
Networks with Limited Data"): the augmentations every image the discriminator sees goes
through, and the heuristic that tunes their probability p.

**Pipeline** (`augment`, images ``[B, H, W, C]`` in [-1, 1]). Each operation is applied to each
example independently with probability p (the paper's 'bgc' set plus cutout), in this order:

* geometric, composed into one 3x3 matrix per example and resampled once (bilinear, mirror
  padding: torch's 'reflect', which ADA pads with), in pixel coordinates centred on the image:
  ``xflip`` (x -> -x), ``rotate90`` (k pi / 2, k ~ U{0..3}), ``xint`` (integer translation,
  round(U(-0.125, 0.125) W) and H pixels), ``scale`` (isotropic, 2^N(0, 0.2)), ``rotate``
  (theta ~ U(-pi, pi), applied twice with probability 1 - sqrt(1 - p) each, around the
  anisotropic scaling, as ADA does), ``aniso`` (2^N(0, 0.2) along x, its inverse along y),
  ``xfrac`` (fractional translation, N(0, 0.125) W and H pixels);
* colour, composed into one affine map per example: ``brightness`` (+ N(0, 0.2)), ``contrast``
  (x 2^N(0, 0.5)), ``saturation`` (the chroma, x minus its projection on the luma axis
  (1, 1, 1) / sqrt 3, times 2^N(0, 1); RGB only, the identity for one channel);
* ``cutout``: a square of half the image side at a uniform centre set to 0.

Every distribution above is symmetric, so a matrix drawn from it is as likely as its inverse;
the matrices are used directly as output -> input sampling maps. Integer shifts, flips and
90-degree rotations land on pixel centres, so they are exact permutations (with mirrored
borders). The whole pipeline is linear in the image for fixed random draws (colour adds a
constant), hence differentiable: the generator's gradient flows through it. ADA resamples with
a 12-tap wavelet filter at 2x; bilinear is this module's simplification.

**Tuning p** (`adjust_p`): every ``interval`` steps, r_t = E[sign(D(x_real))] over those steps
(`overfitting_heuristic`), and

    p <- clip(p + sign(r_t - target) * batch * interval / (kimg * 1000), 0, 1),

target 0.6 and kimg = 500 (p can go from 0 to 1 in 500k images), stylegan2-ada's defaults.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

__all__ = ["GEOMETRIC", "COLOR", "OPS", "adjust_p", "augment", "augmented_apply", "init_state",
           "overfitting_heuristic", "parse_ops", "track"]

GEOMETRIC = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
COLOR = ("brightness", "contrast", "saturation")
OPS = GEOMETRIC + COLOR + ("cutout",)


def _enabled(rng: jax.Array, p: jax.Array, b: int) -> jax.Array:
  return jax.random.uniform(rng, (b,)) < p


def _rotation(theta: jax.Array) -> jax.Array:
  c, s = jnp.cos(theta), jnp.sin(theta)
  z, o = jnp.zeros_like(c), jnp.ones_like(c)
  return jnp.stack([jnp.stack([c, -s, z], -1), jnp.stack([s, c, z], -1),
                    jnp.stack([z, z, o], -1)], -2)


def _scaling(sx: jax.Array, sy: jax.Array) -> jax.Array:
  z, o = jnp.zeros_like(sx), jnp.ones_like(sx)
  return jnp.stack([jnp.stack([sx, z, z], -1), jnp.stack([z, sy, z], -1),
                    jnp.stack([z, z, o], -1)], -2)


def _translation(tx: jax.Array, ty: jax.Array) -> jax.Array:
  z, o = jnp.zeros_like(tx), jnp.ones_like(tx)
  return jnp.stack([jnp.stack([o, z, tx], -1), jnp.stack([z, o, ty], -1),
                    jnp.stack([z, z, o], -1)], -2)


def _geometric_matrix(rng: jax.Array, p: jax.Array, ops: Sequence[str], b: int, h: int, w: int
                      ) -> jax.Array:
  """[B, 3, 3] output -> input maps on (x, y, 1) pixel coordinates centred on the image."""
  g = jnp.broadcast_to(jnp.eye(3), (b, 3, 3))
  keys = iter(jax.random.split(rng, 2 * len(GEOMETRIC) + 2))

  def gate(m: jax.Array, prob: jax.Array) -> jax.Array:
    on = _enabled(next(keys), prob, b)
    return jnp.where(on[:, None, None], m, jnp.eye(3))

  ones = jnp.ones((b,))
  order = GEOMETRIC[:6] + ("rotate_after",) + GEOMETRIC[6:]  # ADA rotates around aniso
  for op in order:
    if (op if op != "rotate_after" else "rotate") not in ops:
      continue
    if op == "xflip":
      g = g @ gate(_scaling(-ones, ones), p)
    elif op == "rotate90":
      k = jax.random.randint(next(keys), (b,), 0, 4).astype(jnp.float32)
      g = g @ gate(_rotation(k * (math.pi / 2)), p)
    elif op == "xint":
      t = jax.random.uniform(next(keys), (b, 2), minval=-0.125, maxval=0.125)
      g = g @ gate(_translation(jnp.round(t[:, 0] * w), jnp.round(t[:, 1] * h)), p)
    elif op == "scale":
      s = 2.0 ** (0.2 * jax.random.normal(next(keys), (b,)))
      g = g @ gate(_scaling(s, s), p)
    elif op in ("rotate", "rotate_after"):  # two draws: rotated with probability p overall
      p_rot = 1.0 - jnp.sqrt(1.0 - p)
      theta = jax.random.uniform(next(keys), (b,), minval=-math.pi, maxval=math.pi)
      g = g @ gate(_rotation(theta), p_rot)
    elif op == "aniso":
      s = 2.0 ** (0.2 * jax.random.normal(next(keys), (b,)))
      g = g @ gate(_scaling(s, 1.0 / s), p)
    elif op == "xfrac":
      t = 0.125 * jax.random.normal(next(keys), (b, 2))
      g = g @ gate(_translation(t[:, 0] * w, t[:, 1] * h), p)
  return g


def _resample(images: jax.Array, g: jax.Array) -> jax.Array:
  """Each image sampled at g (x_out, y_out, 1): bilinear, mirror padding."""
  _, h, w, _ = images.shape
  ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) - (h - 1) / 2,
                        jnp.arange(w, dtype=jnp.float32) - (w - 1) / 2, indexing="ij")
  grid = jnp.stack([xs, ys, jnp.ones_like(xs)], -1).reshape(-1, 3)  # [HW, 3]

  def one(image, m):
    src = grid @ m.T  # [HW, 3]
    coords = [src[:, 1] + (h - 1) / 2, src[:, 0] + (w - 1) / 2]

    def channel(c):
      return jax.scipy.ndimage.map_coordinates(c, coords, order=1, mode="mirror")
    return jax.vmap(channel, in_axes=-1, out_axes=-1)(image).reshape(h, w, -1)

  return jax.vmap(one)(images, g)


def _color(images: jax.Array, rng: jax.Array, p: jax.Array, ops: Sequence[str]) -> jax.Array:
  b, c = images.shape[0], images.shape[-1]
  keys = jax.random.split(rng, 6)
  x = images
  if "brightness" in ops:
    on = _enabled(keys[0], p, b)
    x = x + jnp.where(on, 0.2 * jax.random.normal(keys[1], (b,)), 0.0)[:, None, None, None]
  if "contrast" in ops:
    on = _enabled(keys[2], p, b)
    factor = 2.0 ** (0.5 * jax.random.normal(keys[3], (b,)))
    x = x * jnp.where(on, factor, 1.0)[:, None, None, None]
  if "saturation" in ops and c == 3:
    on = _enabled(keys[4], p, b)
    s = jnp.where(on, 2.0 ** jax.random.normal(keys[5], (b,)), 1.0)[:, None, None, None]
    luma = jnp.mean(x, axis=-1, keepdims=True)  # the projection on (1, 1, 1) / sqrt 3
    x = luma + s * (x - luma)
  return x


def _cutout(images: jax.Array, rng: jax.Array, p: jax.Array) -> jax.Array:
  b, h, w, _ = images.shape
  on_rng, c_rng = jax.random.split(rng)
  on = _enabled(on_rng, p, b)
  centre = jax.random.uniform(c_rng, (b, 2))
  ys = (jnp.arange(h, dtype=jnp.float32) + 0.5) / h
  xs = (jnp.arange(w, dtype=jnp.float32) + 0.5) / w
  inside = ((jnp.abs(ys[None, :, None] - centre[:, 0, None, None]) < 0.25)
            & (jnp.abs(xs[None, None, :] - centre[:, 1, None, None]) < 0.25))
  keep = ~(inside & on[:, None, None])
  return images * keep[..., None].astype(images.dtype)


def augment(images: jax.Array, rng: jax.Array, p: jax.Array | float,
            ops: Sequence[str] = OPS) -> jax.Array:
  """The ADA pipeline (module docstring) on ``[B, H, W, C]`` images with probability `p`.

  Args:
    images: float images in [-1, 1] (outputs may leave the range, as ADA's do).
    rng: key; the draws of every operation derive from it.
    p: the augmentation probability (a traced scalar: p changes during training).
    ops: the operations to apply, a subset of `OPS` in any order (the pipeline's order is
      fixed).

  Raises:
    ValueError: an unknown operation.
  """
  unknown = sorted(set(ops) - set(OPS))
  if unknown:
    raise ValueError(f"unknown ADA operation(s) {unknown}; choose from {list(OPS)}")
  p = jnp.asarray(p, jnp.float32)
  b, h, w, _ = images.shape
  g_rng, c_rng, x_rng = jax.random.split(rng, 3)
  x = images
  if any(op in ops for op in GEOMETRIC):
    x = _resample(x, _geometric_matrix(g_rng, p, ops, b, h, w))
  if any(op in ops for op in COLOR):
    x = _color(x, c_rng, p, ops)
  if "cutout" in ops:
    x = _cutout(x, x_rng, p)
  return x


def overfitting_heuristic(real_logits: jax.Array) -> jax.Array:
  """r_t = E[sign(D(x_real))]: 0 when D cannot tell train from held-out reals, 1 when it
  overfits."""
  return jnp.mean(jnp.sign(real_logits.astype(jnp.float32)))


def adjust_p(p: jax.Array | float, r_t: jax.Array | float, *, batch_size: int, interval: int,
             target: float = 0.6, kimg: float = 500.0) -> jax.Array:
  """One update of p toward r_t = `target` (module docstring)."""
  step = batch_size * interval / (kimg * 1000.0)
  return jnp.clip(jnp.asarray(p, jnp.float32) + jnp.sign(jnp.asarray(r_t) - target) * step,
                  0.0, 1.0)


def init_state(p: float) -> dict[str, jax.Array]:
  """The tuner's state (a `model_state` entry): p, and the running sum and count of r_t."""
  return {"p": jnp.asarray(p, jnp.float32), "rt_sum": jnp.zeros((), jnp.float32),
          "rt_count": jnp.zeros((), jnp.float32)}


def track(state: dict[str, jax.Array], real_sign: jax.Array, *, images_per_step: int,
          interval: int, target: float | None, kimg: float
          ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
  """One step of the tuner: accumulates real_sign = E[sign D(aug(x_real))] of the step and,
  every `interval` steps, moves p by `adjust_p` from their mean r_t (`target` None: p fixed).

  Returns:
    The new state and the metrics {"ada_p", "ada_rt"}.
  """
  total, count = state["rt_sum"] + real_sign, state["rt_count"] + 1.0
  r_t = total / count
  p = state["p"]
  if target is not None:
    due = count >= interval
    moved = adjust_p(p, r_t, batch_size=images_per_step, interval=interval, target=target,
                     kimg=kimg)
    p, total, count = (jnp.where(due, moved, p), jnp.where(due, 0.0, total),
                       jnp.where(due, 0.0, count))
  return {"p": p, "rt_sum": total, "rt_count": count}, {"ada_p": p, "ada_rt": r_t}


def parse_ops(spec: str | Sequence[str]) -> tuple[str, ...]:
  """`gan.ada_ops`: "" (all of `OPS`), "xflip,rotate90,xint" or a sequence of names.

  Raises:
    ValueError: an unknown operation.
  """
  names = tuple(n.strip() for n in spec.split(",") if n.strip()) if isinstance(spec, str) \
      else tuple(spec)
  names = names or OPS
  unknown = sorted(set(names) - set(OPS))
  if unknown:
    raise ValueError(f"unknown ADA operation(s) {unknown} in gan.ada_ops; choose from "
                     f"{list(OPS)}")
  return names


def augmented_apply(d_apply: Callable[..., Any], rng: jax.Array, p: jax.Array,
                    ops: Sequence[str] = OPS) -> Callable[..., Any]:
  """The discriminator apply function `d_apply(params, model_state, x, conditions, *, train)`
  with every input augmented first: D(augment(x)), so the losses, the regularizers (R1 and the
  gradient penalty of D o augment, as stylegan2-ada's) and the generator's gradient all go
  through the pipeline. The i-th call traced draws its augmentations from fold_in(rng, i):
  reals, fakes and each regularizer's inputs get independent draws."""
  calls = itertools.count()

  def apply(params, model_state, x, conditions, *, train):
    key = jax.random.fold_in(rng, next(calls))
    return d_apply(params, model_state, augment(x, key, p, ops), conditions, train=train)

  return apply
