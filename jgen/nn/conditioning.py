"""The one conditioning convention: what a conditional model receives, and its null condition.

A conditional model takes its conditions as one dict, every entry with a leading batch axis:

* ``label``: int32 ``[B]``, a class in ``0..num_classes-1``;
* ``attributes``: float32 ``[B, A]``, multi-hot attributes (celeb_a's 40);
* ``context``: float32 ``[B, T, D]``, a token sequence (text-encoder outputs) for cross-attention;
* ``image``: float32 ``[B, H, W, C]`` in [-1, 1], an image to condition on (translation,
  super-resolution), concatenated to the input;
* ``image_context``: float32 ``[B, N, D]``, image tokens (IP-Adapter's image prompt);
* ``hint``: float32 ``[B, H, W, C]`` in [-1, 1], a ControlNet's structural condition (edges, an
  outline), which guidance never drops: it is the same in both branches (`KEPT`).
* ``embedding``: float32 ``[B, D]``, one vector per example added to a network's timestep
  embedding (a denoising diffusion GAN's mapped latent z, a pooled text or image embedding).

The **null condition** (what classifier-free guidance trains with and guides against) is
``label = num_classes`` (a conditional model built for guidance has ``num_classes + 1``
embedding rows, the last one learned as "no class"), and zeros for ``attributes``, ``context``,
``image`` and ``embedding``. `drop_conditions` also sets ``null``, bool ``[B]``, so that a
model with a learned null embedding for a continuous condition can put it in where ``null``
is true.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["CONDITION_KEYS", "KEPT", "conditions_from_batch", "drop_conditions", "null_conditions",
           "sample_labels"]

CONDITION_KEYS = ("label", "attributes", "context", "image", "embedding", "hint",
                  "image_context")
KEPT = ("hint",)  # conditions that the null condition keeps (ControlNet applies in both branches)
Conditions = dict[str, jax.Array]


def conditions_from_batch(batch: Mapping[str, jax.Array], keys: Sequence[str]) -> Conditions:
  """The conditions `keys` of a batch (the batch field of the same name).

  Raises:
    KeyError: a requested condition is not a field of the batch.
  """
  for k in keys:
    if k not in CONDITION_KEYS:
      raise KeyError(f"unknown condition {k!r}; conditions are {CONDITION_KEYS}")
    if k not in batch:
      raise KeyError(f"the model is conditioned on {k!r} but the batch has only "
                     f"{sorted(batch)}; use a data source that provides it")
  return {k: batch[k] for k in keys}


def null_conditions(conditions: Mapping[str, jax.Array], *, num_classes: int = 0
                    ) -> Conditions:
  """The null condition of the same shapes: label `num_classes`, zeros elsewhere."""
  out = {}
  for k, v in conditions.items():
    if k == "label":
      out[k] = jnp.full_like(v, num_classes)
    elif k == "null":
      out[k] = jnp.ones_like(v)
    elif k in KEPT:
      out[k] = v
    else:
      out[k] = jnp.zeros_like(v)
  if conditions:
    batch = next(iter(conditions.values())).shape[0]
    out["null"] = jnp.ones((batch,), bool)
  return out


def drop_conditions(conditions: Mapping[str, jax.Array], rng: jax.Array, p: float, *,
                    num_classes: int = 0) -> Conditions:
  """Replaces each example's conditions by the null condition with probability `p` (CFG).

  All conditions of one example are dropped together (Ho & Salimans 2022 drop the whole
  condition); ``null`` [B] marks the dropped examples.
  """
  if not conditions:
    return {}
  batch = next(iter(conditions.values())).shape[0]
  drop = jax.random.bernoulli(rng, p, (batch,))
  null = null_conditions(conditions, num_classes=num_classes)
  out = {}
  for k, v in conditions.items():
    if k == "null":
      continue
    mask = drop.reshape((batch,) + (1,) * (v.ndim - 1))
    out[k] = jnp.where(mask, null[k], v)
  prior = conditions.get("null")
  out["null"] = drop if prior is None else jnp.logical_or(drop, prior)
  return out


def sample_labels(spec: str | Sequence[int] | None, n: int, num_classes: int) -> np.ndarray:
  """Labels of `n` conditional samples: every class in turn (0, 1, ..., K-1, 0, ...) by
  default, or `spec` ("3", "0,2,4" or a sequence) repeated to fill `n`.

  Raises:
    ValueError: a label outside 0..num_classes-1 or an unparsable spec.
  """
  if spec is None or (isinstance(spec, str) and not spec.strip()):
    return (np.arange(n) % num_classes).astype(np.int32)
  if isinstance(spec, str):
    try:
      values = [int(s) for s in spec.replace(" ", "").split(",") if s]
    except ValueError as e:
      raise ValueError(f"sample.labels={spec!r}: write class indices separated by commas, "
                       "e.g. '3' or '0,2,4'") from e
  else:
    values = [int(v) for v in spec]
  bad = [v for v in values if not 0 <= v < num_classes]
  if not values or bad:
    raise ValueError(f"sample.labels={spec!r}: labels must lie in 0..{num_classes - 1}"
                     + (f" (got {bad})" if bad else ""))
  return np.resize(np.asarray(values, np.int32), n)
