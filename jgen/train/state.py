"""Train state shared by every method: params, EMA params, optimizer state, step, rng."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

PyTree = Any


def ema_update(ema_params: PyTree, params: PyTree, decay: jax.Array | float) -> PyTree:
  """Returns `decay * ema + (1 - decay) * params`, leaf by leaf."""
  return jax.tree.map(lambda e, p: e + (1.0 - decay) * (p - e), ema_params, params)


def ema_decay_at(step: jax.Array, decay: float, *, warmup: bool) -> jax.Array:
  """EMA decay at `step`; with `warmup` it is min(decay, (1 + step) / (10 + step)).

  The warm-up (as in TensorFlow's ExponentialMovingAverage with num_updates) keeps the
  average from being dominated by the random initialization in short runs.
  """
  if not warmup:
    return jnp.asarray(decay, jnp.float32)
  step = step.astype(jnp.float32)
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


@flax.struct.dataclass
class TrainState:
  """Everything a run carries from step to step, as one pytree.

  Attributes:
    step: int32 scalar, number of optimizer updates applied.
    params: the trained parameters (float32).
    ema_params: exponential moving average of `params`, used for sampling and eval.
    opt_state: optax state of `tx`.
    rng: the run's base PRNG key data (uint32); per-step keys are
      `fold_in(rng, step)`, never threaded.
    tx: the optax transformation (static).
    ema_decay: EMA decay (static).
    ema_warmup: whether the decay ramps up as (1+step)/(10+step) (static).
    model_state: arrays a method carries that no optimizer updates (batch-norm
      statistics, a second network's optimizer state, ...); checkpointed when non-empty.
  """

  step: jax.Array
  params: PyTree
  ema_params: PyTree
  opt_state: PyTree
  rng: jax.Array
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  ema_decay: float = flax.struct.field(pytree_node=False, default=0.9999)
  ema_warmup: bool = flax.struct.field(pytree_node=False, default=False)
  model_state: PyTree = flax.struct.field(default_factory=dict)

  @classmethod
  def create(cls, *, params: PyTree, tx: optax.GradientTransformation, rng: jax.Array,
             ema_decay: float, ema_warmup: bool = False,
             model_state: PyTree | None = None) -> "TrainState":
    """Builds the state at step 0; `rng` may be a typed key or raw uint32 key data."""
    if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
      rng = jax.random.key_data(rng)
    return cls(step=jnp.zeros((), jnp.int32), params=params,
               ema_params=jax.tree.map(jnp.copy, params), opt_state=tx.init(params),
               rng=rng, tx=tx, ema_decay=ema_decay, ema_warmup=ema_warmup,
               model_state={} if model_state is None else model_state)

  def step_rng(self) -> jax.Array:
    """The key of the current step: `fold_in(rng, step)`."""
    return jax.random.fold_in(jax.random.wrap_key_data(self.rng), self.step)

  def apply_gradients(self, grads: PyTree) -> "TrainState":
    """One optimizer update, then the EMA update, then step + 1."""
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    params = optax.apply_updates(self.params, updates)
    decay = ema_decay_at(self.step, self.ema_decay, warmup=self.ema_warmup)
    return self.replace(step=self.step + 1, params=params,
                        ema_params=ema_update(self.ema_params, params, decay),
                        opt_state=opt_state)

  def gradient_step(self, loss_fn, *args) -> tuple["TrainState", dict[str, jax.Array]]:
    """One update from `loss_fn(params, *args) -> (loss, metrics)`.

    Returns:
      The updated state and `metrics` plus the gradients' global norm (`grad_norm`).
    """
    grads, metrics = jax.grad(loss_fn, has_aux=True)(self.params, *args)
    return self.apply_gradients(grads), {**metrics, "grad_norm": optax.global_norm(grads)}

  def checkpoint_items(self) -> dict[str, PyTree]:
    """The arrays that a checkpoint stores (everything but the static fields)."""
    items = {"step": self.step, "params": self.params, "ema_params": self.ema_params,
             "opt_state": self.opt_state, "rng": self.rng}
    if jax.tree.leaves(self.model_state):
      items["model_state"] = self.model_state
    return items

  def from_checkpoint_items(self, items: dict[str, PyTree]) -> "TrainState":
    """The state with its arrays replaced by restored `items`."""
    return self.replace(**items)
