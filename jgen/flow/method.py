"""A normalizing flow as a method of the loop: exact log-likelihood training in bits/dim.

`FlowMethod` wraps a `MultiScaleFlow` (RealNVP or Glow; `jgen.flow.realnvp` and
`jgen.flow.glow` build it from a config). Images from the loop (in [-1, 1]) are turned into
pixel levels, dequantized with uniform noise and scaled (`jgen.flow.likelihood`); the loss is
the bits/dim of the discrete data, `n_bits - (log p_flow(v) + log|dv/dy|) / (D log 2)`, exactly
as in the papers. `init` runs the flow once on the first batch: that is the data-dependent
initialization of every ActNorm. The flow's `constants` (LU permutations and signs) are kept
in `TrainState.model_state`, out of reach of the optimizer and the EMA.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jgen.flow import likelihood as lik
from jgen.nn.flow_models import MultiScaleFlow
from jgen.ops.likelihoods import bits_per_dim
from jgen.train.optim import make_optimizer
from jgen.train.state import TrainState

__all__ = ["FlowMethod", "flow_method"]

PyTree = Any


@dataclasses.dataclass(frozen=True, eq=False)
class FlowMethod:
  """A flow trained by maximum likelihood; every function is pure in its parameters.

  Attributes:
    model: the flow, built for the data's image shape.
    tx: optimizer.
    n_bits: bits per pixel of the modelled data (8: the full 8-bit images).
    preprocessing: 'center' (Glow), 'symmetric' or 'logit' (RealNVP); see `likelihood`.
    logit_alpha: the logit transform's `a`.
    temperature: standard deviation of the latents that `sample` draws (Glow's T).
    ema_decay, ema_warmup: EMA of the parameters used by `evaluate` and `sample`.
  """

  model: MultiScaleFlow
  tx: optax.GradientTransformation
  n_bits: int = 8
  preprocessing: str = "center"
  logit_alpha: float = 0.05
  temperature: float = 0.7
  ema_decay: float = 0.999
  ema_warmup: bool = True

  def __post_init__(self):
    if self.preprocessing not in lik.PREPROCESSING:
      raise ValueError(f"unknown flow preprocessing {self.preprocessing!r}; choose one of "
                       f"{lik.PREPROCESSING}")
    lik.to_levels(jnp.zeros(()), self.n_bits)  # checks n_bits
    if self.temperature < 0:
      raise ValueError(f"the sampling temperature must be >= 0, got {self.temperature}")

  # ------------------------------------------------------------------ data <-> flow input

  def to_flow_input(self, x: jax.Array, rng: jax.Array | None
                    ) -> tuple[jax.Array, jax.Array]:
    """`(v, log|dv/dy|)`: images in [-1, 1] dequantized (bin centres if `rng` is None) and
    scaled for the flow."""
    y = lik.dequantize(x, rng, self.n_bits)
    return lik.preprocess(y, self.preprocessing, self.logit_alpha)

  def from_flow_input(self, v: jax.Array) -> jax.Array:
    """Images in [-1, 1] (on the `n_bits` grid) from flow inputs `v`."""
    return lik.quantize(lik.postprocess(v, self.preprocessing, self.logit_alpha), self.n_bits)

  @staticmethod
  def variables(params: PyTree, model_state: PyTree) -> dict[str, PyTree]:
    """The flow's Flax variables from `params` and the state's `model_state` (constants)."""
    return {"params": params, **model_state}

  # ------------------------------------------------------------------ likelihood

  def bits_per_dim(self, params: PyTree, model_state: PyTree, x: jax.Array,
                   rng: jax.Array | None) -> jax.Array:
    """Bits/dim per image of 8-bit images `x` in [-1, 1], with one dequantization sample."""
    v, logdet_pre = self.to_flow_input(x, rng)
    log_p_v = self.model.apply(self.variables(params, model_state), v, method="log_prob")
    return bits_per_dim(log_p_v + logdet_pre, math.prod(x.shape[1:]), self.n_bits)

  def loss_fn(self, params: PyTree, model_state: PyTree, batch: dict[str, jax.Array],
              rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`(loss, metrics)`: the batch's mean bits/dim (also as `bpd` and `nll` in nats/image)."""
    bpd = self.bits_per_dim(params, model_state, batch["image"], rng)
    loss = jnp.mean(bpd)
    num_dims = math.prod(batch["image"].shape[1:])
    return loss, {"loss": loss, "bpd": loss, "nll": loss * num_dims * math.log(2.0)}

  # ------------------------------------------------------------------ exact encode / decode

  def encode(self, params: PyTree, model_state: PyTree, x: jax.Array,
             rng: jax.Array | None = None) -> tuple[jax.Array, ...]:
    """The latents (one per level) of images `x` in [-1, 1], dequantized at bin centres
    unless `rng` is given; `decode` maps them back to exactly `x`."""
    v, _ = self.to_flow_input(x, rng)
    return self.model.apply(self.variables(params, model_state), v, method="forward")[0]

  def decode(self, params: PyTree, model_state: PyTree, latents: Sequence[jax.Array]
             ) -> jax.Array:
    """Images in [-1, 1] from latents (one per level, shapes `model.latent_shapes()`)."""
    v = self.model.apply(self.variables(params, model_state), tuple(latents), method="inverse")
    return self.from_flow_input(v)

  def latent_shapes(self) -> tuple[tuple[int, int, int], ...]:
    """Shapes of the latents without the batch axis."""
    return self.model.latent_shapes()

  # ------------------------------------------------------------------ the loop's contract

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
    """Parameters from running the flow on `batch` (data-dependent ActNorm init)."""
    init_rng, data_rng, state_rng = jax.random.split(rng, 3)
    v, _ = self.to_flow_input(batch["image"], data_rng)
    # The initializers draw from an 'rbg' key derived from `rng`: a flow has many parameters of
    # many shapes, and XLA compiles threefry's bit generation for each of them slowly on CPU
    # (the smoke Glow's init compiles in 10.6 s with a threefry key, 4.1 s with an rbg key).
    init_rng = jax.random.wrap_key_data(jax.random.bits(init_rng, (4,), jnp.uint32), impl="rbg")
    variables = dict(self.model.init(init_rng, v, method="forward"))
    params = variables.pop("params")
    return TrainState.create(params=params, tx=self.tx, rng=state_rng, ema_decay=self.ema_decay,
                             ema_warmup=self.ema_warmup, model_state=variables)

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    return state.gradient_step(self.loss_fn, state.model_state, batch, rng)

  def evaluate(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
               ) -> dict[str, jax.Array]:
    """Bits/dim (and nats per image) of the batch under the EMA parameters."""
    _, metrics = self.loss_fn(state.ema_params, state.model_state, batch, rng)
    return metrics

  def sample(self, state: TrainState, rng: jax.Array, n: int) -> jax.Array:
    """`n` images in [-1, 1]: latents from N(0, temperature^2 I) decoded with the EMA params."""
    keys = jax.random.split(rng, len(self.latent_shapes()))
    latents = [self.temperature * jax.random.normal(k, (n, *s), jnp.float32)
               for k, s in zip(keys, self.latent_shapes())]
    return self.decode(state.ema_params, state.model_state, latents)

  @property
  def sample_tag(self) -> str:
    return f"{type(self.model).__name__.lower()}_t{self.temperature:g}"


def flow_method(config: Any, model: MultiScaleFlow) -> FlowMethod:
  """A `FlowMethod` for `model` from an experiment config (`flow`, `optim`, `train`, `sample`)."""
  dtype = config.model.dtype
  if dtype != "float32":
    raise ValueError(f"flows compute in float32 (their log-determinants sum thousands of terms); "
                     f"got config.model.dtype={dtype!r}")
  f = config.flow
  return FlowMethod(model=model,
                    tx=make_optimizer(config.optim, total_steps=config.train.num_steps),
                    n_bits=f.n_bits, preprocessing=f.preprocessing, logit_alpha=f.logit_alpha,
                    temperature=config.sample.temperature,
                    ema_decay=config.train.ema_decay, ema_warmup=config.train.ema_warmup)
