"""Train state shared by every method: params, model_state, frozen arrays, EMAs, optimizer.

Three kinds of arrays, one rule each:

* ``params``: the Flax ``params`` collection, the only arrays an optimizer updates. Which leaves
  train is ``rules`` (`jgen.train.rules`: regex -> learning-rate multiplier or frozen); the
  optimizer state and the EMAs hold the trainable leaves only.
* ``model_state``: every other Flax collection (batch-norm statistics) and any non-gradient state
  a method carries (a codebook's EMA statistics, a second optimizer's state); never averaged.
* ``frozen``: arrays a run uses but never trains (a first-stage autoencoder, a teacher, the base
  model under an adapter), filled by ``init_from``. They are leaves of the state, so they ride
  on the mesh as arguments of the jitted step instead of being baked into it as constants; no
  optimizer state, no EMA; stored in every checkpoint, so a resume does not depend on the run
  they came from still existing.

EMAs: ``emas[name]`` averages the trainable leaves of ``params`` that match its `EmaSpec`'s
``subtree`` pattern with its own decay (a sampling EMA and a consistency-model target EMA side
by side; a GAN averages its generator only). ``averaged(name)`` is ``params`` with those leaves
replaced, the tree to sample with; ``ema_params`` is ``averaged("ema")``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import optax

from jgen.train import parallel
from jgen.train import rules as rules_lib

PyTree = Any

__all__ = ["ChainedView", "EmaSpec", "PerNetwork", "TrainState", "ema_decay_at", "ema_update",
           "per_network"]


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


@dataclasses.dataclass(frozen=True)
class EmaSpec:
  """One exponential moving average of (part of) the trainable parameters.

  Attributes:
    name: key in `TrainState.emas` ("ema" is the one sampling and evaluation use).
    decay: the average's decay per update.
    warmup: ramp the decay as min(decay, (1 + step) / (10 + step)).
    subtree: regex over parameter paths (`re.fullmatch`) of the leaves averaged, e.g.
      "generator/.*"; ".*" averages every trainable leaf.
  """

  name: str = "ema"
  decay: float = 0.9999
  warmup: bool = False
  subtree: str = ".*"


class PerNetwork(NamedTuple):
  """Optimizers side by side, an optax `GradientTransformation`: `txs[k]` updates `params[k]`.

  `txs` is a tuple of `(name, transformation)` pairs (hashable: the state keeps it static). A
  network absent from the trainable parameters (frozen by a rule) gets no state.
  """

  init: Any
  update: Any
  txs: tuple[tuple[str, optax.GradientTransformation], ...]


def per_network(txs: Mapping[str, optax.GradientTransformation]) -> PerNetwork:
  """`PerNetwork` of `{network name: optimizer}`; state and updates are dicts by name."""
  pairs = tuple(txs.items())

  def init(params):
    return {k: tx.init(params[k]) for k, tx in pairs if k in params}

  def update(grads, state, params=None):
    out = {k: tx.update(grads[k], state[k], None if params is None else params[k])
           for k, tx in pairs if k in grads}
    return {k: u for k, (u, _) in out.items()}, {k: s for k, (_, s) in out.items()}

  return PerNetwork(init, update, pairs)


@dataclasses.dataclass(frozen=True)
class ChainedView:
  """`TrainState.view` functions applied in turn (LoRA's merge, then a method's own view)."""

  views: tuple[Callable[[PyTree], PyTree], ...]

  def __call__(self, params: PyTree) -> PyTree:
    for view in self.views:
      params = view(params)
    return params


def _prefixed(tree: Mapping[str, Any], prefix: str | None) -> dict[str, Any]:
  return dict(tree) if prefix is None else {prefix: tree}


@flax.struct.dataclass
class TrainState:
  """Everything a run carries from step to step, as one pytree (see the module docstring).

  Attributes:
    step: int32 scalar, number of (generator) updates applied.
    params: the Flax `params` collection (float32), a nested dict.
    opt_state: optax state of `tx` over the trainable view of `params`.
    rng: the run's base PRNG key data (uint32); per-step keys are `fold_in(rng, step)`.
    emas: `{name: nested dict of averaged leaves}`, one per `ema_specs` entry.
    model_state: non-optimized arrays (other Flax collections, non-gradient state).
    frozen: arrays never optimized or averaged (`init_from` fills them).
    tx: the optax transformation (static); a `PerNetwork` for several networks.
    ema_specs: the `EmaSpec` entries (static).
    rules: `((pattern, multiplier or None), ...)` over parameter paths (static).
    view: the model's parameters as a function of the stored ones (static; None: the
      identity). LoRA stores the base parameters and a ``lora`` subtree of adapters, and its
      view folds the adapters into the kernels (`jgen.nn.lora.Lora.view`); every loss,
      gradient and EMA tree a method sees passes through it (`model_params`).
  """

  step: jax.Array
  params: PyTree
  opt_state: PyTree
  rng: jax.Array
  emas: PyTree = flax.struct.field(default_factory=dict)
  model_state: PyTree = flax.struct.field(default_factory=dict)
  frozen: PyTree = flax.struct.field(default_factory=dict)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False, default=None)
  ema_specs: tuple[EmaSpec, ...] = flax.struct.field(pytree_node=False, default=())
  rules: tuple[rules_lib.Rule, ...] = flax.struct.field(pytree_node=False, default=())
  view: Callable[[PyTree], PyTree] | None = flax.struct.field(pytree_node=False, default=None)

  @classmethod
  def create(cls, *, params: PyTree, tx: optax.GradientTransformation, rng: jax.Array,
             ema_decay: float | None = None, ema_warmup: bool = False,
             emas: Sequence[EmaSpec] | None = None, rules: Sequence[rules_lib.Rule] = (),
             model_state: PyTree | None = None, frozen: PyTree | None = None
             ) -> "TrainState":
    """The state at step 0; `rng` may be a typed key or raw uint32 key data.

    Args:
      params: the `params` collection, a nested dict.
      tx: optimizer of the trainable leaves.
      rng: the run's base key.
      ema_decay, ema_warmup: shorthand for `emas=(EmaSpec("ema", ema_decay, ema_warmup),)`.
      emas: the EMAs to keep (default: the shorthand's one, or none without `ema_decay`).
      rules: trainable-parameter rules (`jgen.train.rules.parse_rules`).
      model_state: other collections / non-gradient state.
      frozen: frozen arrays.
    """
    if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
      rng = jax.random.key_data(rng)
    if emas is None:
      emas = () if ema_decay is None else (EmaSpec("ema", ema_decay, ema_warmup),)
    params = dict(params)
    state = cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=None, rng=rng,
                model_state={} if model_state is None else dict(model_state),
                frozen={} if frozen is None else dict(frozen), tx=tx, ema_specs=tuple(emas))
    return state.with_rules(rules)

  # ------------------------------------------------------------------ views

  def multipliers(self) -> dict[str, float | None]:
    """`{parameter path: learning-rate multiplier or None (frozen)}` under `rules`."""
    return rules_lib.leaf_multipliers(list(rules_lib.flat(self.params)), self.rules)

  def to_model(self, params: PyTree) -> PyTree:
    """A stored parameter tree (this state's, an EMA's) as the model applies it (`view`)."""
    return params if self.view is None else self.view(params)

  @property
  def model_params(self) -> PyTree:
    """The current parameters as the model applies them (`to_model` of `params`)."""
    return self.to_model(self.params)

  def trainable(self, params: PyTree | None = None) -> dict[str, Any]:
    """The trainable view of `params` (default `self.params`): frozen leaves left out."""
    mult = self.multipliers()
    return rules_lib.select(self.params if params is None else params,
                            lambda k: mult[k] is not None)

  def averaged(self, name: str = "ema") -> PyTree:
    """`params` with the leaves of EMA `name` put in, as the model applies them (the tree to
    sample with)."""
    if name not in self.emas:
      raise KeyError(f"no EMA named {name!r}; this state keeps {sorted(self.emas)}")
    return self.to_model(rules_lib.merge(self.params, self.emas[name]))

  @property
  def ema_params(self) -> PyTree:
    """`averaged("ema")`, or `model_params` when the state keeps no EMA."""
    return self.averaged("ema") if "ema" in self.emas else self.model_params

  def with_rules(self, rules: Sequence[rules_lib.Rule]) -> "TrainState":
    """The state under `rules`, with a fresh optimizer state and EMAs of the current params.

    The loop calls this after `init_from` has put pretrained parameters in, so averages start
    from them.

    Raises:
      ValueError: a rule or an EMA `subtree` pattern matches no parameter.
    """
    state = self.replace(rules=rules_lib.parse_rules(rules))
    trainable = state.trainable()
    paths = list(rules_lib.flat(trainable))
    emas = {}
    for spec in state.ema_specs:
      keep = {k for k in paths if re.fullmatch(spec.subtree, k)}
      if not keep:
        raise ValueError(f"EMA {spec.name!r}: subtree pattern {spec.subtree!r} matches no "
                         f"trainable parameter path (e.g. {', '.join(paths[:6])})")
      emas[spec.name] = jax.tree.map(jnp.copy, rules_lib.select(trainable, keep))
    return state.replace(opt_state=state.tx.init(trainable), emas=emas)

  def step_rng(self) -> jax.Array:
    """The key of the current step: `fold_in(rng, step)`."""
    return jax.random.fold_in(jax.random.wrap_key_data(self.rng), self.step)

  # ------------------------------------------------------------------ updates

  def apply_gradients(self, grads: PyTree, *, network: str | None = None,
                      count_step: bool = True) -> "TrainState":
    """One optimizer update of the trainable leaves, then their EMAs, then step + 1.

    Args:
      grads: gradients of the trainable view (of `params[network]` with `network`).
      network: update only `params[network]` with its own optimizer (`tx` a `PerNetwork`)
        and only the EMA leaves under it; other networks and their EMAs are untouched.
      count_step: advance `step` (a GAN counts generator updates only).

    Under ``config.parallel = "pmap"`` the gradients are first averaged over the replicas
    (`jgen.train.parallel.replica_mean`; the identity under jit).
    """
    return self._apply(parallel.replica_mean(grads), network=network, count_step=count_step)

  def _apply(self, grads: PyTree, *, network: str | None, count_step: bool) -> "TrainState":
    """`apply_gradients` of gradients already averaged over replicas."""
    mult = self.multipliers()
    if network is None:
      params, tx, opt_state = self.trainable(), self.tx, self.opt_state
    else:
      if not isinstance(self.tx, PerNetwork):
        raise TypeError("apply_gradients(network=...) needs tx = per_network({...})")
      tx = dict(self.tx.txs)[network]
      params = self.trainable()[network]
      opt_state = self.opt_state[network]
    updates, opt_state = tx.update(grads, opt_state, params)
    if any(m not in (None, 1.0) for m in mult.values()):
      flat_u = rules_lib.flat(_prefixed(updates, network))
      updates = rules_lib.unflat({k: u * mult[k] for k, u in flat_u.items()})
      updates = updates if network is None else updates[network]
    new = optax.apply_updates(params, updates)
    new_params = rules_lib.merge(self.params, _prefixed(new, network))
    if network is not None:
      opt_state = {**self.opt_state, network: opt_state}
    decay_step = self.step
    emas = {}
    for spec in self.ema_specs:
      ema = rules_lib.flat(self.emas[spec.name])
      prefix = None if network is None else network + "/"
      todo = {k: v for k, v in ema.items() if prefix is None or k.startswith(prefix)}
      if todo:
        decay = ema_decay_at(decay_step, spec.decay, warmup=spec.warmup)
        current = rules_lib.flat(new_params)
        ema.update(ema_update(todo, {k: current[k] for k in todo}, decay))
      emas[spec.name] = rules_lib.unflat(ema)
    return self.replace(step=self.step + 1 if count_step else self.step, params=new_params,
                        opt_state=opt_state, emas=emas)

  def grad(self, loss_fn, *args, trainable: PyTree | None = None) -> tuple[PyTree, Any]:
    """`(grads, aux)` of `loss_fn(model params, *args) -> (loss, aux)` with respect to the
    trainable leaves (`trainable`, default this state's trainable view).

    The loss sees `to_model` of the stored parameters with the trainable leaves put in; the
    frozen leaves are closed over, so they cost no gradient computation, and under LoRA the
    gradient reaches the adapters through the view's W + (alpha / r) A B.
    """
    def of_trainable(theta, *a):
      return loss_fn(self.to_model(rules_lib.merge(self.params, theta)), *a)

    theta = self.trainable() if trainable is None else trainable
    return jax.grad(of_trainable, has_aux=True)(theta, *args)

  def gradient_step(self, loss_fn, *args) -> tuple["TrainState", dict[str, jax.Array]]:
    """One update from `loss_fn(params, *args) -> (loss, metrics)` (gradients by `grad`).

    Returns:
      The updated state and `metrics` plus the gradients' global norm (`grad_norm`).
    """
    grads, metrics = self.grad(loss_fn, *args)
    grads = parallel.replica_mean(grads)  # pmap: the global batch's gradient (and its norm)
    return (self._apply(grads, network=None, count_step=True),
            {**metrics, "grad_norm": optax.global_norm(grads)})

  # ------------------------------------------------------------------ checkpoints

  def checkpoint_items(self) -> dict[str, PyTree]:
    """The arrays that a checkpoint stores (everything but the static fields)."""
    items = {"step": self.step, "params": self.params, "opt_state": self.opt_state,
             "rng": self.rng}
    for name in ("emas", "model_state", "frozen"):
      if jax.tree.leaves(getattr(self, name)):
        items[name] = getattr(self, name)
    return items

  def from_checkpoint_items(self, items: dict[str, PyTree]) -> "TrainState":
    """The state with its arrays replaced by restored `items`."""
    return self.replace(**items)
