"""Classifier guidance (Dhariwal & Nichol, 2021) as pure functions over a noise-aware classifier.

A classifier p_phi(y | x_t, t) (`jgen.nn.classifier.NoisyClassifier`, trained by the
`diffusion.noisy_classifier` method) steers an unconditional eps-prediction model toward class
y with scale s:

* every eps-based sampler (DDIM, and the DPM-Solver / Euler / Heun solvers through
  `jgen.diffusion.to_eps_fn`) runs on the guided denoiser of Eq. 14 / Algorithm 2,
  ``eps'(x_t, t) = eps(x_t, t) - sqrt(1 - abar_t) s grad_x log p_phi(y | x_t, t)``,
  built by `classifier_guided_eps_fn` -- guidance wraps a denoiser into another denoiser;
* ancestral sampling shifts the mean of each step instead (Eq. 10 / Algorithm 1),
  ``x_{t-1} ~ N(mu + s Sigma grad_x log p_phi(y | x_t, t), Sigma)``, in
  `classifier_guided_ddpm_sample`: `jgen.diffusion.ddpm_sample` with its `mean_shift` hook
  (with ``clip_denoised`` the shift cannot be folded into eps), so it keeps `ddpm_sample`'s key
  and noise conventions and at s = 0 returns `ddpm_sample`'s samples for the same key.

Through the loop: `--config.sample.classifier.workdir=<a diffusion.noisy_classifier run>` and
`--config.sample.classifier_scale=s` (`jgen.diffusion.ddpm.ConditionalDDPM`).

A ``GradFn`` is ``(x_t [B, ...], t [B] int32) -> grad_x log p(y | x_t, t)`` for labels bound
in advance (`classifier_grad_fn`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import chex
import jax
import jax.numpy as jnp

from jgen.diffusion.samplers import ddpm_sample
from jgen.ops.schedules import Schedule, extract

EpsFn = Callable[[jax.Array, jax.Array], jax.Array]
LogitsFn = Callable[[jax.Array, jax.Array], jax.Array]
GradFn = Callable[[jax.Array, jax.Array], jax.Array]

__all__ = [
    "classifier_grad_fn",
    "classifier_guided_ddpm_sample",
    "classifier_guided_eps_fn",
    "classifier_log_prob_grad",
]


def classifier_log_prob_grad(logits_fn: LogitsFn, x_t: jax.Array, t: jax.Array,
                             labels: jax.Array) -> jax.Array:
  """grad_x log softmax(logits_fn(x_t, t))[y], per example.

  Computed as `jax.grad` of the batch sum of the selected log-probabilities, which is the
  per-example gradient as long as `logits_fn` treats examples independently (no batch
  statistics: `NoisyClassifier` with group norm, ``train=False``).

  Args:
    logits_fn: Classifier, (x_t [B, ...], t [B]) -> logits [B, num_classes].
    x_t: Noisy inputs [B, ...].
    t: Integer timesteps [B].
    labels: Integer target classes [B].

  Returns:
    The gradient, with the shape and dtype of `x_t`.
  """
  chex.assert_rank(labels, 1)
  chex.assert_axis_dimension(x_t, 0, labels.shape[0])

  def total_log_prob(x):
    logits = logits_fn(x, t)
    chex.assert_shape(logits, (x.shape[0], None))
    log_probs = jax.nn.log_softmax(logits.astype(x.dtype), axis=-1)
    return jnp.sum(jnp.take_along_axis(log_probs, labels[:, None].astype(jnp.int32), axis=-1))

  return jax.grad(total_log_prob)(x_t)


def classifier_grad_fn(logits_fn: LogitsFn, labels: jax.Array) -> GradFn:
  """The `GradFn` of `logits_fn` for fixed target `labels` [B] (see `classifier_log_prob_grad`)."""
  return lambda x_t, t: classifier_log_prob_grad(logits_fn, x_t, t, labels)


def classifier_guided_eps_fn(eps_fn: EpsFn, grad_fn: GradFn, schedule: Schedule,
                             scale: float | jax.Array) -> EpsFn:
  """The guided denoiser eps' = eps - sqrt(1 - abar_t) s grad (Dhariwal & Nichol, Eq. 14).

  Pass the result to `ddim_sample` (their Algorithm 2) or any other eps-based sampler. With
  the Python number ``scale == 0`` the classifier is not called and `eps_fn` is returned as is.

  Args:
    eps_fn: Noise predictor, (x_t [B, ...], t [B] int32) -> eps.
    grad_fn: grad_x log p(y | x_t, t), e.g. `classifier_grad_fn(logits_fn, labels)`.
    schedule: The diffusion schedule of `eps_fn` (and of the classifier's training).
    scale: Guidance scale s (a scalar, or an array broadcasting against x_t).

  Returns:
    The guided `eps_fn`.
  """
  if isinstance(scale, (int, float)) and scale == 0:
    return eps_fn

  def guided(x_t, t):
    eps = eps_fn(x_t, t)
    grad = grad_fn(x_t, t)
    chex.assert_equal_shape([eps, grad, x_t])
    sigma = extract(schedule.sqrt_one_minus_alphas_cumprod, t, x_t)
    return eps - sigma * scale * grad.astype(eps.dtype)

  return guided


def classifier_guided_ddpm_sample(
    eps_fn: EpsFn,
    schedule: Schedule,
    rng: jax.Array,
    shape: Sequence[int],
    grad_fn: GradFn,
    scale: float | jax.Array,
    *,
    clip_denoised: bool = True,
    x_T: jax.Array | None = None,
) -> jax.Array:
  """Ancestral sampling with the classifier-shifted mean (Dhariwal & Nichol, Algorithm 1).

  `ddpm_sample` with a `mean_shift`: each step forms the DDPM posterior mean mu and variance Sigma
  from eps_fn (x_0 prediction clipped to [-1, 1] with `clip_denoised`, as `ddpm_sample`), then draws
  ``x_{t-1} = mu + s Sigma grad_fn(x_t, t) + sqrt(Sigma_clipped) z`` with no noise at t = 0.
  The shift uses the posterior variance beta_t (1 - abar_{t-1}) / (1 - abar_t) (zero at
  t = 0, as guided-diffusion's ``condition_mean``); the noise uses the clipped log variance
  of `ddpm_sample`. Keys as `ddpm_sample`: x_T from the first half of `split(rng)` unless
  given, step i's noise from `fold_in(second half, i)`.

  Args:
    eps_fn: Noise predictor, (x_t [B, ...] float32, t [B] int32) -> eps.
    schedule: The diffusion schedule.
    rng: PRNG key.
    shape: Static output shape [B, ...].
    grad_fn: grad_x log p(y | x_t, t), e.g. `classifier_grad_fn(logits_fn, labels)`.
    scale: Guidance scale s.
    clip_denoised: Clip the x_0 prediction to [-1, 1].
    x_T: Optional starting noise of shape `shape`.

  Returns:
    The samples, shape `shape`.
  """
  shift = None
  if not (isinstance(scale, (int, float)) and scale == 0):
    shift = lambda x, t, variance: scale * variance * grad_fn(x, t)
  return ddpm_sample(eps_fn, schedule, rng, shape, clip_denoised=clip_denoised, x_T=x_T,
                     mean_shift=shift)
