"""Classifier-free guidance (Ho & Salimans 2022) as a pure wrapper of a denoiser.

A model trained with its conditions dropped to the null condition part of the time
(`jgen.nn.conditioning.drop_conditions`) predicts both eps(x_t, t, c) and eps(x_t, t, null).
Guidance with scale ``w`` samples with

    eps_w(x_t, t) = eps_u + w (eps_c - eps_u),   eps_c = eps(x_t, t, c),  eps_u = eps(x_t, t, null)

Convention: ``w = 1`` is the plain conditional model, ``w = 0`` the unconditional one, and
``w > 1`` over-weights the condition. The CFG paper writes ``(1 + w') eps_c - w' eps_u``; that is
this form with ``w = 1 + w'`` (their w' = 0 is our w = 1). `cfg_eps_fn` returns an
``eps_fn(x_t, t)``, so it runs inside every sampler and solver of `jgen.diffusion` (which take
exactly that), at integer or fractional t. For x0- or v-prediction networks, convert first with
`jgen.diffusion.to_eps_fn` (guidance in eps equals guidance in x0 or v: the conversions are
affine in the prediction at fixed x_t, t).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Callable

import jax
import jax.numpy as jnp

__all__ = ["cfg_eps_fn", "chained_cfg_eps_fn", "concat_conditions"]

CondEpsFn = Callable[[jax.Array, jax.Array, Mapping[str, jax.Array]], jax.Array]
EpsFn = Callable[[jax.Array, jax.Array], jax.Array]


def concat_conditions(first: Mapping[str, jax.Array], second: Mapping[str, jax.Array]
                      ) -> dict[str, jax.Array]:
  """Two condition dicts of batch ``B`` as one of batch ``2B`` (``first`` then ``second``).

  A ``null`` [B] flag present in only one of them is taken as all False (for ``first``) or all
  True (for ``second``), the usual pairing of given and null conditions.

  Raises:
    ValueError: the dicts have different keys (other than ``null``).
  """
  keys = set(first) | set(second)
  if set(first) - {"null"} != set(second) - {"null"}:
    raise ValueError(f"conditional and null conditions must have the same keys, got "
                     f"{sorted(first)} and {sorted(second)}")
  out = {}
  for k in sorted(keys):
    a, b = first.get(k), second.get(k)
    if a is None:
      a = jnp.zeros_like(b, dtype=bool)
    if b is None:
      b = jnp.ones_like(a, dtype=bool)
    out[k] = jnp.concatenate([jnp.asarray(a), jnp.asarray(b).astype(jnp.asarray(a).dtype)],
                             axis=0)
  return out


def cfg_eps_fn(eps_cond_fn: CondEpsFn, conditions: Mapping[str, jax.Array],
               null_conditions: Mapping[str, jax.Array], w: float | jax.Array) -> EpsFn:
  """The classifier-free guided denoiser ``eps_u + w (eps_c - eps_u)``.

  The conditional and unconditional predictions come from ONE batched forward pass: ``[x, x]``
  with ``[t, t]`` and the two condition dicts concatenated along the batch axis, the output
  split in halves. A Python ``w`` of exactly 1 or 0 needs only one half and evaluates only
  that one (the conditional resp. the unconditional model, at batch ``B``); a traced ``w``
  always takes the batched path.

  Args:
    eps_cond_fn: ``(x_t [B, ...], t [B], conditions) -> eps`` (e.g.
      ``lambda x, t, c: unet.apply(params, x, t, c, train=False)``).
    conditions: The conditions (`jgen.nn.conditioning`), every entry with leading axis B.
    null_conditions: The null conditions of the same keys and shapes
      (`jgen.nn.conditioning.null_conditions`).
    w: Guidance scale (module docstring): 1 conditional, 0 unconditional.

  Returns:
    ``eps_fn(x_t, t) -> eps`` of shape ``x_t``.
  """
  conditions, null_conditions = dict(conditions), dict(null_conditions)
  if isinstance(w, (int, float)) and float(w) == 1.0:
    return lambda x, t: eps_cond_fn(x, t, conditions)
  if isinstance(w, (int, float)) and float(w) == 0.0:
    return lambda x, t: eps_cond_fn(x, t, null_conditions)
  both = concat_conditions(conditions, null_conditions)

  def eps_fn(x: jax.Array, t: jax.Array) -> jax.Array:
    t = jnp.broadcast_to(jnp.asarray(t), (x.shape[0],))
    eps = eps_cond_fn(jnp.concatenate([x, x], axis=0), jnp.concatenate([t, t], axis=0), both)
    eps_c, eps_u = jnp.split(eps, 2, axis=0)
    return eps_u + jnp.asarray(w, eps.dtype) * (eps_c - eps_u)

  return eps_fn


def chained_cfg_eps_fn(eps_cond_fn: CondEpsFn, chain: Sequence[Mapping[str, jax.Array]],
                       scales: Sequence[float]) -> EpsFn:
  """Guidance over a chain of conditions c_0 (all null), c_1, ..., c_K, each adding one
  condition to the one before, with a scale per step:

      eps = eps(c_0) + sum_k s_k (eps(c_k) - eps(c_{k-1})).

  Face0's separable guidance is K = 2: c_0 = (no identity, no text), c_1 = (identity, no
  text), c_2 = (identity, text), s_1 the identity scale, s_2 the text scale; K = 1 is
  `cfg_eps_fn`'s ``eps_u + w (eps_c - eps_u)``. The K + 1 predictions come from one batched
  forward pass.

  Raises:
    ValueError: ``len(scales) != len(chain) - 1``, or conditions of other keys.
  """
  chain = [dict(c) for c in chain]
  if len(scales) != len(chain) - 1 or not scales:
    raise ValueError(f"{len(chain)} conditions need {len(chain) - 1} scales, got {len(scales)}")
  keys = set(chain[0])
  if any(set(c) != keys for c in chain):
    raise ValueError(f"every condition of the chain needs the keys {sorted(keys)}")
  stacked = {k: jnp.concatenate([jnp.asarray(c[k]) for c in chain], axis=0) for k in keys}
  n = len(chain)

  def eps_fn(x: jax.Array, t: jax.Array) -> jax.Array:
    t = jnp.broadcast_to(jnp.asarray(t), (x.shape[0],))
    eps = jnp.split(eps_cond_fn(jnp.concatenate([x] * n, axis=0),
                                jnp.concatenate([t] * n, axis=0), stacked), n, axis=0)
    out = eps[0]
    for k, s in enumerate(scales, start=1):
      out = out + jnp.asarray(s, out.dtype) * (eps[k] - eps[k - 1])
    return out

  return eps_fn
