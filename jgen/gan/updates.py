"""Pure adversarial updates: one optimizer step of one network (or group), composable.

Every GAN family is a composition of three functions over a `jgen.train.TrainState` whose
`params` (and `model_state`) are dicts keyed by network name and whose `tx` is
`per_network({name: optimizer})`:

* `update(state, loss_fn, networks=..., ...)`: the general step. It differentiates
  `loss_fn(params, model_state, rng)` with respect to the trainable leaves of `networks` only
  (the other networks enter the loss as constants), adds the regularizers that are due at
  `step`, and hands each network's gradients to `state.apply_gradients(network=k)` (its own
  optimizer, only its own EMA leaves), then applies the projections (weight clipping).
* `discriminator_update`: `update` with the discriminator's adversarial loss of real vs
  (fixed) fake inputs.
* `generator_update`: `update` with the generator's adversarial loss of D(G(z)).

Networks are *apply functions* `apply(params, model_state, x, conditions, *, train) ->
(output, new_model_state)` (`module_apply(flax_module)` makes one of a linen module, with its
batch statistics in `model_state`).

Regularizers are terms, each a `Regularizer(name, fn, every)` with `fn(params, model_state,
inputs, rng) -> (penalty, model_state)`. A regularizer with `every = k > 1` is *lazy*
(StyleGAN2, Karras et al. 2020, appendix B): it runs only on the steps with step % k == 0,
inside a `lax.cond` (the other steps compute nothing for it), with its penalty multiplied by k
so that its average strength is unchanged (a skipped step costs nothing; a taken `cond` costs
more than the same term inlined on XLA:CPU, see docs/guide/performance.md; `every=1` is
inlined, no `cond`). Provided: `gradient_penalty`
(WGAN-GP), `r1` (Mescheder et al. 2018; StyleGAN2's lazy R1 is `r1(d, gamma=10, every=16)`) and
`path_length` (StyleGAN2's path-length regularization of G, with its running mean in
`model_state`). Weight clipping is a projection after the optimizer step: `clip_projection`.

Sketch: CycleGAN (Zhu et al. 2017) with generators `g_ab`, `g_ba` and discriminators `d_a`,
`d_b` (`per_network` over the four names; least-squares loss) is, per step::

  def g_loss(params, ms, rng):        # both generators in one group: one loss, two optimizers
    fake_b, _ = g(params["g_ab"], ms["g_ab"], a, None, train=True)
    fake_a, _ = g(params["g_ba"], ms["g_ba"], b, None, train=True)
    adv = (losses.generator_loss("least_squares", d(params["d_b"], ms["d_b"], fake_b, None,
                                                     train=True)[0])
           + losses.generator_loss("least_squares", d(params["d_a"], ms["d_a"], fake_a, None,
                                                       train=True)[0]))
    cycle = (l1(g(params["g_ba"], ..., fake_b)[0], a) + l1(g(params["g_ab"], ..., fake_a)[0], b))
    return adv + 10.0 * cycle, (ms, {"g_loss": adv, "cycle": cycle})

  state, m_g = update(state, g_loss, networks=("g_ab", "g_ba"), rng=r0, count_step=True)
  fake_b = g(state.model_params["g_ab"], ..., a)[0]
  fake_a = g(state.model_params["g_ba"], ..., b)[0]
  state, m_b = discriminator_update(state, d, b, fake_b, network="d_b", loss="least_squares",
                                    rng=r1, step=state.step)
  state, m_a = discriminator_update(state, d, a, fake_a, network="d_a", loss="least_squares",
                                    rng=r2, step=state.step)

(with CycleGAN's image history buffer in `model_state`). StarGAN is `generator_update` with
`conditions={"label": target}` plus a classification and reconstruction term in a custom
`update`, and a `discriminator_update` whose `loss` adds the class head's cross entropy; a
VQ-GAN is `update(networks=("encoder", "quantizer", "decoder"))` with reconstruction +
perceptual + adversarial terms, then `discriminator_update` of a patch D; StyleGAN2 is
`generator_update(regularizers=(path_length(g, every=4),))` and
`discriminator_update(regularizers=(r1(d, gamma=10, every=16),))`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jgen.train import rules as rules_lib
from jgen.gan import losses
from jgen.train.state import TrainState

PyTree = Any
Metrics = dict[str, jax.Array]
ApplyFn = Callable[..., tuple[jax.Array, PyTree]]
LossFn = Callable[[PyTree, PyTree, jax.Array], tuple[jax.Array, tuple[PyTree, Metrics]]]

__all__ = ["Regularizer", "clip_projection", "discriminator_update", "generator_update",
           "gradient_penalty", "module_apply", "path_length", "r1", "update"]


@dataclasses.dataclass(frozen=True)
class Regularizer:
  """A term added to one update's loss on every `every`-th step.

  Attributes:
    name: the metric the (unscaled) penalty is logged under.
    fn: `fn(params, model_state, inputs, rng) -> (penalty, model_state)`: the full parameter
      tree (the updated networks' leaves are the ones differentiated), the model state after
      the loss, the update's `inputs` dict and a key of its own.
    every: lazy interval k: runs when step % k == 0, its penalty scaled by k.
  """

  name: str
  fn: Callable[[PyTree, PyTree, Mapping[str, Any], jax.Array], tuple[jax.Array, PyTree]]
  every: int = 1

  def __post_init__(self):
    if self.every < 1:
      raise ValueError(f"regularizer {self.name!r}: every must be >= 1, got {self.every}")


def module_apply(module: nn.Module) -> ApplyFn:
  """The apply function `(params, model_state, x, conditions, *, train) -> (out, model_state)`
  of a linen module called as `module(x, labels, train=...)`.

  `conditions` is None or a dict with `label`. `model_state` holds the module's other
  collections (`{"batch_stats": ...}`); they are updated only with `train=True`.
  """

  def apply(params, model_state, x, conditions=None, *, train: bool):
    labels = None if conditions is None else conditions.get("label")
    variables = {"params": params, **model_state}
    if train and model_state:
      out, updates = module.apply(variables, x, labels, train=True, mutable=list(model_state))
      return out, dict(updates)
    return module.apply(variables, x, labels, train=train), model_state

  return apply


def _due(step: jax.Array | int, every: int) -> jax.Array:
  return jnp.asarray(step) % every == 0


def _with_regularizers(loss_fn: LossFn, regularizers: Sequence[Regularizer],
                       inputs: Mapping[str, Any], step: jax.Array | int) -> LossFn:
  """`loss_fn` plus every regularizer due at `step` (lazy ones under `lax.cond`)."""

  def total(params, model_state, rng):
    loss, (model_state, metrics) = loss_fn(params, model_state, rng)
    metrics = dict(metrics)
    for i, reg in enumerate(regularizers):
      key = jax.random.fold_in(rng, i + 1)
      if reg.every == 1:
        penalty, model_state = reg.fn(params, model_state, inputs, key)
        metrics[reg.name] = penalty
        loss = loss + penalty
        continue
      run = lambda ms, key=key, reg=reg: reg.fn(params, ms, inputs, key)
      skip = lambda ms: (jnp.zeros((), jnp.float32), ms)
      due = _due(step, reg.every)
      penalty, model_state = jax.lax.cond(due, run, skip, model_state)
      metrics[reg.name] = penalty
      metrics[reg.name + "_applied"] = due.astype(jnp.float32)
      loss = loss + reg.every * penalty
    return loss, (model_state, metrics)

  return total


def update(state: TrainState, loss_fn: LossFn, *, networks: str | Sequence[str],
           rng: jax.Array, step: jax.Array | int = 0, inputs: Mapping[str, Any] | None = None,
           regularizers: Sequence[Regularizer] = (),
           projections: Mapping[str, Callable[[PyTree], PyTree]] | None = None,
           count_step: bool = False) -> tuple[TrainState, Metrics]:
  """One optimizer step of `networks`, the others held fixed.

  With theta the trainable leaves of `networks` and `params` the full tree,

      g = grad_theta [ loss(params) + sum_r [step % k_r == 0] k_r R_r(params) ]
      theta_k <- theta_k + tx_k(g_k)   for each network k (its own optimizer and EMA leaves)
      theta_k <- P_k(theta_k)          (projections, e.g. weight clipping)

  Args:
    state: a `TrainState` with `tx = per_network({...})` covering `networks`.
    loss_fn: `loss_fn(params, model_state, rng) -> (loss, (model_state, metrics))` over the
      full parameter and model-state trees (only `networks`' leaves are differentiated).
    networks: the network name, or a group of names updated from one loss.
    rng: the update's key (regularizer i gets `fold_in(rng, i + 1)`).
    step: the counter lazy regularizers test (this network's update count).
    inputs: what the regularizers read (real and fake batches, conditions, z).
    regularizers: `Regularizer` terms.
    projections: `{network: fn(network params) -> params}` applied after the step (clipping).
      They act on `params` after the network's EMA update (project networks without an EMA).
    count_step: advance `state.step` (GANs count generator updates).

  Returns:
    The new state (params, opt_state, EMAs and `model_state` as the loss returned it) and the
    metrics of the loss and the regularizers, plus `grad_norm` (global norm of all of `g`).
  """
  names = (networks,) if isinstance(networks, str) else tuple(networks)
  total = _with_regularizers(loss_fn, regularizers, inputs or {}, step)
  trainable = state.trainable()
  theta = {k: trainable[k] for k in names if k in trainable}

  grads, (model_state, metrics) = state.grad(total, state.model_state, rng, trainable=theta)
  step_before = state.step
  for k in theta:
    state = state.apply_gradients(grads[k], network=k, count_step=False)
  if count_step:  # once per update, also when every network of the group is frozen
    state = state.replace(step=step_before + 1)
  if projections:  # of the trainable leaves: a frozen one (a LoRA base) never changes
    params = dict(state.params)
    for k, project in projections.items():
      params[k] = project(params[k])
    trainable = rules_lib.select(params, set(rules_lib.flat(state.trainable())))
    state = state.replace(params=rules_lib.merge(state.params, trainable))
  state = state.replace(model_state=model_state)
  return state, {**metrics, "grad_norm": optax.global_norm(grads)}


def _loss_pair(loss: str | Callable, which: int) -> Callable:
  if callable(loss):
    return loss
  if loss not in losses.LOSSES:
    raise ValueError(f"unknown GAN loss {loss!r}; choose one of {sorted(losses.LOSSES)}")
  return losses.LOSSES[loss][which]


def discriminator_update(state: TrainState, d_apply: ApplyFn, real: jax.Array,
                         fake: jax.Array, *, rng: jax.Array, step: jax.Array | int = 0,
                         conditions: Mapping[str, jax.Array] | None = None,
                         loss: str | Callable[[jax.Array, jax.Array], jax.Array]
                         = "non_saturating", network: str = "discriminator",
                         regularizers: Sequence[Regularizer] = (),
                         projections: Sequence[Callable[[PyTree], PyTree]] = ()
                         ) -> tuple[TrainState, Metrics]:
  """One discriminator (critic) step on real and fake inputs (fakes are constants).

  min_D  L_D(D(x), D(stop_gradient(G(z)))) + sum_r [step % k_r == 0] k_r R_r(D),
  then D <- P(D) for each projection P (WGAN's clipping to [-c, c]).

  Args:
    state: the train state (`params[network]` the critic).
    d_apply: the critic's apply function (`module_apply`), scores `[B]`.
    real, fake: batches of the same shape; `fake` is not differentiated.
    rng: key of the regularizers.
    step: the critic's update count (lazy regularizers test it).
    conditions: the conditions both batches are scored under (`{"label": [B]}`) or None.
    loss: a kind of `jgen.gan.losses.LOSSES` or `fn(real_logits, fake_logits) -> loss`.
    network: the critic's name in `params`.
    regularizers: e.g. `(gradient_penalty(d_apply, weight=10),)`, `(r1(d_apply, ...),)`.
    projections: functions of the critic's parameters applied after its step.

  Returns:
    The state and `d_loss` (the adversarial part), `real_score`, `fake_score` (mean logits),
    `real_sign` (E[sign D(x_real)], ADA's r_t), the regularizers' penalties and `d_grad_norm`.
  """
  d_loss = _loss_pair(loss, 0)
  fake = jax.lax.stop_gradient(fake)

  def loss_fn(params, model_state, rng):
    del rng
    ms = model_state[network]
    real_logits, ms = d_apply(params[network], ms, real, conditions, train=True)
    fake_logits, ms = d_apply(params[network], ms, fake, conditions, train=True)
    adv = d_loss(real_logits, fake_logits)
    metrics = {"d_loss": adv, "real_score": jnp.mean(real_logits),
               "fake_score": jnp.mean(fake_logits),
               "real_sign": jnp.mean(jnp.sign(real_logits))}  # ADA's overfitting r_t
    return adv, ({**model_state, network: ms}, metrics)

  inputs = {"real": real, "fake": fake, "conditions": conditions}
  projections = {network: _compose(projections)} if projections else None
  state, metrics = update(state, loss_fn, networks=network, rng=rng, step=step, inputs=inputs,
                          regularizers=regularizers, projections=projections)
  metrics["d_grad_norm"] = metrics.pop("grad_norm")
  return state, metrics


def generator_update(state: TrainState, g_apply: ApplyFn, d_apply: ApplyFn, z: jax.Array, *,
                     rng: jax.Array, step: jax.Array | int = 0,
                     conditions: Mapping[str, jax.Array] | None = None,
                     loss: str | Callable[[jax.Array], jax.Array] = "non_saturating",
                     generator: str = "generator", discriminator: str = "discriminator",
                     regularizers: Sequence[Regularizer] = (), count_step: bool = True
                     ) -> tuple[TrainState, Metrics]:
  """One generator step against a fixed discriminator.

  min_G  L_G(D(G(z))) + sum_r [step % k_r == 0] k_r R_r(G). The discriminator runs in
  training mode (as in its own step) but its statistics are not updated.

  Args:
    state: the train state.
    g_apply, d_apply: the apply functions of the generator and the critic.
    z: the latent batch.
    rng: key of the regularizers.
    step: the generator's update count (lazy regularizers test it).
    conditions: conditions of G and D (`{"label": [B]}`) or None.
    loss: a kind of `jgen.gan.losses.LOSSES` or `fn(fake_logits) -> loss`.
    generator, discriminator: the networks' names.
    regularizers: e.g. `(path_length(g_apply, every=4),)`.
    count_step: advance `state.step`.

  Returns:
    The state and `g_loss`, the regularizers' penalties and `g_grad_norm`.
  """
  g_loss = _loss_pair(loss, 1)

  def loss_fn(params, model_state, rng):
    del rng
    fake, g_ms = g_apply(params[generator], model_state[generator], z, conditions, train=True)
    logits, _ = d_apply(params[discriminator], model_state[discriminator], fake, conditions,
                        train=True)
    value = g_loss(logits)
    return value, ({**model_state, generator: g_ms}, {"g_loss": value})

  inputs = {"z": z, "conditions": conditions}
  state, metrics = update(state, loss_fn, networks=generator, rng=rng, step=step,
                          inputs=inputs, regularizers=regularizers, count_step=count_step)
  metrics["g_grad_norm"] = metrics.pop("grad_norm")
  return state, metrics


def _compose(fns: Sequence[Callable[[PyTree], PyTree]]) -> Callable[[PyTree], PyTree]:
  def composed(p):
    for f in fns:
      p = f(p)
    return p
  return composed


# ---------------------------------------------------------------------- regularizers


def _critic_fn(d_apply: ApplyFn, network: str, params, model_state, conditions):
  return lambda x: d_apply(params[network], model_state[network], x, conditions, train=True)[0]


def gradient_penalty(d_apply: ApplyFn, *, weight: float = 10.0, every: int = 1,
                     network: str = "discriminator") -> Regularizer:
  """WGAN-GP's weight * E[(||grad D(x_hat)|| - 1)^2] on interpolates of `inputs["real"]` and
  `inputs["fake"]` (`jgen.gan.losses.gradient_penalty`), logged as `gp`."""

  def fn(params, model_state, inputs, rng):
    d_fn = _critic_fn(d_apply, network, params, model_state, inputs.get("conditions"))
    return (losses.gradient_penalty(d_fn, inputs["real"], inputs["fake"], rng, weight=weight),
            model_state)

  return Regularizer("gp", fn, every)


def r1(d_apply: ApplyFn, *, gamma: float = 10.0, every: int = 1,
       network: str = "discriminator") -> Regularizer:
  """R1, gamma / 2 * E[||grad D(x)||^2] on `inputs["real"]`, logged as `r1`. StyleGAN2's lazy
  R1 is `every=16` (the update scales the penalty by 16 on the steps it runs)."""

  def fn(params, model_state, inputs, rng):
    del rng
    d_fn = _critic_fn(d_apply, network, params, model_state, inputs.get("conditions"))
    return losses.r1_penalty(d_fn, inputs["real"], gamma=gamma), model_state

  return Regularizer("r1", fn, every)


def path_length(g_apply: ApplyFn, *, weight: float = 2.0, decay: float = 0.01,
                every: int = 4, network: str = "generator", key: str = "path_length",
                mapping: Callable[..., jax.Array] | None = None, batch_shrink: int = 1
                ) -> Regularizer:
  """StyleGAN2's path-length regularization of G, logged as `pl`.

  With y ~ N(0, I) / sqrt(H W) (images [B, H, W, C]), latents u of the first
  B / `batch_shrink` examples of `inputs["z"]`, and g = J_u^T y (J_u the Jacobian of the
  images w.r.t. u), the length of each example is

      a = sqrt(mean_l sum_d g_{l d}^2)

  over the style inputs l of u = ws [B, L, D] (`mapping(params, model_state, z, conditions)
  -> ws`, StyleGAN2's w; `g_apply` then renders ws) or, without `mapping`, a = ||g|| w.r.t.
  u = z (L = 1). penalty = weight * E[(a - m)^2], where m is the running mean
  m <- m + decay (E[a] - m), kept as `model_state[key]["mean"]` (start it at 0 in `init`).
  """
  if batch_shrink < 1:
    raise ValueError(f"path_length: batch_shrink must be >= 1, got {batch_shrink}")

  def fn(params, model_state, inputs, rng):
    z, conditions = inputs["z"], inputs.get("conditions")
    n = max(1, z.shape[0] // batch_shrink)
    z = z[:n]
    if conditions is not None:
      conditions = jax.tree.map(lambda c: c[:n], conditions)
    g_ms = model_state[network]
    u = z if mapping is None else mapping(params[network], g_ms, z, conditions)
    out = lambda v: g_apply(params[network], g_ms, v, conditions, train=True)[0]
    images = out(u)
    pixels = math.prod(images.shape[1:-1])  # H W of [B, H, W, C] (1 for vectors [B, D])
    noise = jax.random.normal(rng, images.shape) / math.sqrt(pixels)
    grads = jax.grad(lambda v: jnp.sum(out(v) * noise))(u)
    grads = grads.reshape(n, -1, grads.shape[-1]) if mapping is not None else grads.reshape(
        n, 1, -1)
    lengths = jnp.sqrt(jnp.mean(jnp.sum(jnp.square(grads), -1), -1))
    mean = model_state[key]["mean"]
    new_mean = jax.lax.stop_gradient(mean + decay * (jnp.mean(lengths) - mean))
    penalty = weight * jnp.mean(jnp.square(lengths - new_mean))
    return penalty, {**model_state, key: {"mean": new_mean}}

  return Regularizer("pl", fn, every)


def clip_projection(clip: float) -> Callable[[PyTree], PyTree]:
  """Every leaf clipped to [-clip, clip] (the original WGAN's constraint), as a projection."""
  return lambda params: losses.clip_weights(params, clip)
