"""LoRA (Hu et al. 2021): low-rank updates of chosen kernels, as a transformation of parameters.

A target kernel W is the ``kernel`` leaf of a Dense layer, ``[d_in, d_out]``, or of a k x k
convolution, ``[k, k, c_in, c_out]``, viewed as ``[fan_in, d_out]`` with fan_in = k k c_in. Its
adapter is a pair A ``[fan_in, r]``, B ``[r, d_out]``, and the adapted kernel is

    W' = W + (alpha / r) A B        (reshaped to W's shape).

For a convolution this is a k x k convolution c_in -> r followed by a 1 x 1 convolution
r -> c_out (LyCORIS's LoCon), summed with the frozen one. B starts at zero, so W' = W at
initialisation and the adapted model computes exactly what the base model does. A starts as
in loralib's ``nn.Linear`` (Kaiming uniform, bound 1 / sqrt(fan_in); ``init="kaiming"``) or as
the paper's Gaussian (std 1 / r, peft's ``init_lora_weights="gaussian"``; ``init="gaussian"``).

Modules are not forked: `Lora.merge` returns the base parameters with every target kernel
replaced by W', and any model applies them as it applies its own. Training differentiates the
loss through `merge` with respect to the adapters only. The adapters form a nested dict that
mirrors the kernels' paths: ``{"down_0": {"conv": {"kernel": {"lora_a": A, "lora_b": B}}}}``.
Under the spine's rules they sit in the ``lora/`` subtree. `Lora.merge` then folds them into
exported weights, and `Lora.unmerge` takes them out again, up to float rounding.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jgen.ops.trees import flat, unflat

Array = jax.Array
PyTree = Any

INITS = ("kaiming", "gaussian")
KERNEL = "kernel"
A, B = "lora_a", "lora_b"
SUBTREE = "lora"  # where a stored parameter tree keeps the adapters (`Lora.view`)
RULE = r"(.*/)?lora/.*"  # the spine rule (`jgen.train.rules`) that selects them


@dataclasses.dataclass(frozen=True)
class Lora:
  """Low-rank adapters of the kernels whose module path matches ``targets``.

  Attributes:
    rank: r, the rank of each update. A target with min(fan_in, d_out) <= r (a 1-channel output
      convolution, say) gets an update of full rank, which is still exact at initialisation.
    targets: Regular expression searched (``re.search``) in each kernel's module path, the
      ``/``-joined keys above its ``kernel`` leaf, e.g. ``"attn_.*/(q|k|v|proj_out)$"`` or
      ``"conv"``.
    alpha: The update's scale is alpha / r; ``None``: alpha = r (scale 1).
    init: How A starts: 'kaiming' or 'gaussian' (see the module docstring).
  """

  rank: int
  targets: str
  alpha: float | None = None
  init: str = "kaiming"

  def __post_init__(self):
    if self.rank < 1:
      raise ValueError(f"LoRA rank must be at least 1, got {self.rank}")
    if self.init not in INITS:
      raise ValueError(f"unknown LoRA init {self.init!r}; choose one of {INITS}")
    try:
      re.compile(self.targets)
    except re.error as e:
      raise ValueError(f"LoRA targets {self.targets!r} is not a regular expression: {e}") from e

  @property
  def scale(self) -> float:
    """alpha / r."""
    return (self.rank if self.alpha is None else self.alpha) / self.rank

  def paths(self, params: Mapping[str, Any]) -> list[str]:
    """The paths of the target kernels (2-D Dense or 4-D convolution ``kernel`` leaves).

    Raises:
      ValueError: ``targets`` matches no kernel (the message lists the kernels' module paths).
    """
    kernels = {p: v for p, v in flat(params).items()
               if p.rsplit("/", 1)[-1] == KERNEL and getattr(v, "ndim", 0) in (2, 4)}
    pattern = re.compile(self.targets)
    chosen = [p for p in kernels if pattern.search(p.rsplit("/", 1)[0] if "/" in p else "")]
    if not chosen:
      modules = sorted(p.rsplit("/", 1)[0] for p in kernels)
      raise ValueError(f"LoRA targets {self.targets!r} match no Dense or convolution kernel; "
                       f"the {len(modules)} module paths are: {modules}")
    return chosen

  def init_adapters(self, rng: Array, params: Mapping[str, Any]) -> dict[str, Any]:
    """Adapters of every target kernel: A as `init` says, B zero, float32."""
    kernels = flat(params)
    out = {}
    for i, p in enumerate(self.paths(params)):
      shape = kernels[p].shape
      fan_in = _fan_in(shape)
      key = jax.random.fold_in(rng, i)
      if self.init == "kaiming":
        bound = 1.0 / math.sqrt(fan_in)
        a = jax.random.uniform(key, (fan_in, self.rank), jnp.float32, -bound, bound)
      else:
        a = jax.random.normal(key, (fan_in, self.rank), jnp.float32) / self.rank
      out[f"{p}/{A}"] = a
      out[f"{p}/{B}"] = jnp.zeros((self.rank, shape[-1]), jnp.float32)
    return unflat(out)

  def delta(self, kernel_shape: tuple[int, ...], a: Array, b: Array) -> Array:
    """(alpha / r) A B, reshaped to ``kernel_shape``, in float32."""
    return (self.scale * (a.astype(jnp.float32) @ b.astype(jnp.float32))).reshape(kernel_shape)

  def merge(self, params: Mapping[str, Any], adapters: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with each adapted kernel W replaced by W + (alpha / r) A B (in W's dtype)."""
    return self._fold(params, adapters, +1.0)

  def unmerge(self, params: Mapping[str, Any], adapters: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of `merge`: W' - (alpha / r) A B, equal to W up to float rounding."""
    return self._fold(params, adapters, -1.0)

  def view(self, stored: Mapping[str, Any]) -> Any:
    """The model's parameters from a stored tree that holds adapters in ``lora`` subtrees.

    Every dict node with a ``lora`` key (the root for one network; ``generator/lora`` and
    ``discriminator/lora`` when networks train side by side) is replaced by its other keys with
    the adapters of that ``lora`` subtree merged in (`merge`; the adapters mirror the paths of
    the node's other keys). A tree with no ``lora`` key comes back unchanged. This is
    `jgen.train.state.TrainState.view` for a LoRA run.
    """
    if not isinstance(stored, Mapping):
      return stored
    out = {k: self.view(v) for k, v in stored.items() if k != SUBTREE}
    return self.merge(out, stored[SUBTREE]) if SUBTREE in stored else out

  def __call__(self, stored: Mapping[str, Any]) -> Any:
    """`view`: a `Lora` is itself a `TrainState.view` (a value-compared static field, so jit
    sees the same state structure from every equal `Lora`)."""
    return self.view(stored)

  def _fold(self, params, adapters, sign: float) -> dict[str, Any]:
    items = flat(params)
    pairs = _pairs(adapters)
    for p, (a, b) in pairs.items():
      if p not in items:
        raise KeyError(f"the adapters hold {p!r}, which the parameters lack; were they made "
                       "for another model?")
      w = items[p]
      items[p] = (w.astype(jnp.float32) + sign * self.delta(w.shape, a, b)).astype(w.dtype)
    return unflat(items)


def num_params(adapters: Mapping[str, Any]) -> int:
  """Parameters in the adapters: sum of r (fan_in + d_out) over the targets."""
  return sum(int(v.size) for v in flat(adapters).values())


def _fan_in(shape: tuple[int, ...]) -> int:
  return math.prod(shape[:-1])


def _pairs(adapters: Mapping[str, Any]) -> dict[str, tuple[Array, Array]]:
  """``{kernel path: (A, B)}`` of an adapter tree."""
  leaves = flat(adapters)
  out = {}
  for path in leaves:
    kernel, name = path.rsplit("/", 1)
    if name not in (A, B):
      raise ValueError(f"{path!r} is not a LoRA adapter leaf (ends in /{A} or /{B})")
    if name == A:
      if f"{kernel}/{B}" not in leaves:
        raise ValueError(f"adapter {kernel!r} has {A} but no {B}")
      out[kernel] = (leaves[path], leaves[f"{kernel}/{B}"])
  return out
