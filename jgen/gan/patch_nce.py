"""PatchNCE (Park et al. 2020, "Contrastive Learning for Unpaired Image-to-Image Translation",
CUT): a content loss that asks each patch of a translation to identify the patch of its source
at the same place among the source's other patches.

For one layer of encoder features, F of the source x and F' of the translation y_hat, both
`[B, H, W, C]`, S locations s_1..s_S (the same locations in both, shared across the batch), a
two-layer head h (Dense(n) - ReLU - Dense(n)) and L2 normalization,

    v_i = h(F[b, s_i]) / ||h(F[b, s_i])||,   q_i = h(F'[b, s_i]) / ||h(F'[b, s_i])||,

    l_b = (1 / S) sum_i -log( exp(q_i . v_i / tau) / sum_j exp(q_i . v_j / tau) ),

the cross entropy of picking the source patch at the query's own place (the positive) among
the S source patches of the same image (the S - 1 others are the negatives: CUT's default,
`nce_includes_all_negatives_from_minibatch=False`). The source side v is a constant
(stop-gradient, as CUT detaches `feat_k`): the loss moves the translation and the head, not
the source's features. `patch_nce_loss` averages l_b over the batch and over the layers
(CUT's `total_nce_loss / len(nce_layers)`); tau = 0.07 and n = 256 are CUT's.

CUT sets the positive apart and fills the query-key diagonal of the negatives with -10 before
dividing by tau; that term adds exp(-10 / 0.07) ~ 1e-62 to the denominator, so the softmax over
all S source patches here is the same loss (`tests/gan/test_patch_nce.py` checks it against a
NumPy transcription of CUT's form).

Locations (`sample_locations`): all H W of a layer when `num_patches` >= H W (CUT's
`num_patches = 0`), else `num_patches` drawn without replacement.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["PatchNCEHead", "patch_nce_layer", "patch_nce_loss", "sample_locations"]


def sample_locations(rng: jax.Array, height: int, width: int, num_patches: int) -> jax.Array:
  """Flat indices into H W: all of them (in order) when `num_patches` >= H W, else
  `num_patches` distinct ones drawn uniformly."""
  if num_patches < 1:
    raise ValueError(f"num_patches must be >= 1, got {num_patches}")
  total = height * width
  if num_patches >= total:
    return jnp.arange(total)
  return jax.random.permutation(rng, total)[:num_patches]


def _gather(features: jax.Array, locations: jax.Array) -> jax.Array:
  """`[B, H, W, C]`, `[S]` -> `[B, S, C]`."""
  b, h, w, c = features.shape
  return features.reshape(b, h * w, c)[:, locations]


def patch_nce_layer(query: jax.Array, key: jax.Array, tau: float = 0.07) -> jax.Array:
  """Per image PatchNCE of one layer, `[B]`, from L2-normalized embeddings `[B, S, n]`:
  l_b = mean_i -log softmax_j(q_i . v_j / tau)[i] (the key side is held constant)."""
  if query.shape != key.shape or query.ndim != 3:
    raise ValueError(f"query and key must both be [B, S, n], got {query.shape} and {key.shape}")
  key = jax.lax.stop_gradient(key)
  logits = jnp.einsum("bin,bjn->bij", query, key).astype(jnp.float32) / tau
  log_p = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.mean(jnp.diagonal(log_p, axis1=1, axis2=2), axis=-1)


class PatchNCEHead(nn.Module):
  """CUT's `PatchSampleF` head: one MLP per layer, Dense(features) - ReLU - Dense(features),
  on the features at sampled locations, then L2 normalization (eps 1e-7, as CUT's `Normalize`).

  `__call__(features, locations)`: `features` a sequence of `[B, H_l, W_l, C_l]`, `locations`
  one `[S_l]` index array per layer -> one `[B, S_l, features]` embedding per layer.
  """

  features: int = 256

  @nn.compact
  def __call__(self, features: Sequence[jax.Array], locations: Sequence[jax.Array]
               ) -> list[jax.Array]:
    if len(features) != len(locations):
      raise ValueError(f"{len(features)} feature maps but {len(locations)} location sets")
    out = []
    for i, (f, loc) in enumerate(zip(features, locations)):
      x = _gather(f.astype(jnp.float32), loc)
      x = nn.Dense(self.features, name=f"mlp_{i}_0")(x)
      x = nn.Dense(self.features, name=f"mlp_{i}_1")(nn.relu(x))
      norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
      out.append(x / (norm + 1e-7))
    return out


def patch_nce_loss(head: nn.Module, head_params, source_features: Sequence[jax.Array],
                   translation_features: Sequence[jax.Array], rng: jax.Array, *,
                   num_patches: int = 256, tau: float = 0.07) -> jax.Array:
  """L_PatchNCE: the mean over layers and images of `patch_nce_layer`.

  Args:
    head: a `PatchNCEHead`; head_params its parameters.
    source_features: the source's encoder features, one `[B, H, W, C]` per layer (held
      constant: the keys).
    translation_features: the translation's features at the same layers (the queries).
    rng: draws the locations of each layer (shared by source and translation and by the batch).
    num_patches: locations per layer (all of a layer with fewer).
    tau: the temperature.
  """
  if len(source_features) != len(translation_features) or not source_features:
    raise ValueError(f"PatchNCE needs the same layers on both sides, got "
                     f"{len(source_features)} and {len(translation_features)}")
  locations = []
  for i, (f, g) in enumerate(zip(source_features, translation_features)):
    if f.shape != g.shape:
      raise ValueError(f"layer {i}: source features {f.shape} vs translation {g.shape}")
    locations.append(sample_locations(jax.random.fold_in(rng, i), f.shape[1], f.shape[2],
                                      num_patches))
  keys = head.apply({"params": head_params}, [jax.lax.stop_gradient(f)
                                              for f in source_features], locations)
  queries = head.apply({"params": head_params}, list(translation_features), locations)
  per_layer = [jnp.mean(patch_nce_layer(q, k, tau)) for q, k in zip(queries, keys)]
  return jnp.mean(jnp.stack(per_layer))
