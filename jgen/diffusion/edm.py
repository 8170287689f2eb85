"""EDM (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative
Models"), `config.method = "diffusion.edm"`.

The process is x = x0 + sigma n (`jgen.ops.processes.EDM`, time t = sigma). The network F
(jgen's U-Net) is wrapped into a denoiser by the preconditioning of Table 1,

    D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma)),
    c_skip = sigma_d^2 / (sigma^2 + sigma_d^2),   c_out = sigma sigma_d / sqrt(sigma^2 + sigma_d^2),
    c_in = 1 / sqrt(sigma^2 + sigma_d^2),         c_noise = ln(sigma) / 4,

(`preconditioning`; c_noise is the U-Net's time input, as EDM feeds its own networks), and
trained with ln sigma ~ N(P_mean, P_std^2) (`sample_sigmas`; -1.2, 1.2) and the weight
lambda(sigma) = (sigma^2 + sigma_d^2) / (sigma sigma_d)^2 (`loss_weight`) on
|| D(x0 + sigma n; sigma) - x0 ||^2, which makes the effective weight of F's error 1 at every
sigma. It samples with Algorithm 2 (`jgen.diffusion.solvers.edm_sample`: Heun's method on the
Karras grid between sigma_min and sigma_max with rho = 7, and optional churn). Everything else
(class conditions, classifier-free guidance, EMA, the loop) is `jgen.diffusion.ddpm.DDPM`'s
with `EDMObjective` on the `EDM` process.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jgen.diffusion import ddpm as ddpm_lib
from jgen.diffusion.losses import continuous_loss
from jgen.ops.processes import EDM, Process

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]


def preconditioning(sigma: jax.Array, sigma_data: float
                    ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """(c_skip, c_out, c_in, c_noise) of EDM's Table 1 at noise levels `sigma` (any shape)."""
  sigma = jnp.asarray(sigma, jnp.float32)
  total = jnp.square(sigma) + sigma_data**2
  c_skip = sigma_data**2 / total
  c_out = sigma * sigma_data * jax.lax.rsqrt(total)
  c_in = jax.lax.rsqrt(total)
  c_noise = 0.25 * jnp.log(sigma)
  return c_skip, c_out, c_in, c_noise


def loss_weight(sigma: jax.Array, sigma_data: float) -> jax.Array:
  """lambda(sigma) = (sigma^2 + sigma_d^2) / (sigma sigma_d)^2 = 1 / c_out^2."""
  sigma = jnp.asarray(sigma, jnp.float32)
  return (jnp.square(sigma) + sigma_data**2) / jnp.square(sigma * sigma_data)


def sample_sigmas(rng: jax.Array, n: int, *, p_mean: float = -1.2, p_std: float = 1.2
                  ) -> jax.Array:
  """n training noise levels, ln sigma ~ N(p_mean, p_std^2), float32 [n]."""
  return jnp.exp(p_mean + p_std * jax.random.normal(rng, (n,), jnp.float32))


@dataclasses.dataclass(frozen=True)
class EDMObjective(ddpm_lib.Objective):
  """EDM's preconditioned denoiser and loss on the `EDM` process; the network's prediction is
  the denoiser D, i.e. 'x0', and the samplers take it as it is.

  Attributes:
    sigma_data: the data's standard deviation (0.5 for images in [-1, 1]).
    p_mean, p_std: the log-normal training distribution of sigma.
  """

  sigma_data: float = 0.5
  p_mean: float = -1.2
  p_std: float = 1.2

  def check(self, process: Process, prediction: str) -> None:
    if not isinstance(process, EDM):
      raise ValueError(f"EDM's objective trains on the EDM process, not "
                       f"{type(process).__name__}")
    if prediction != "x0":
      raise ValueError(f"EDM's preconditioned network is a denoiser D(x; sigma): set "
                       f"diffusion.prediction='x0' (got {prediction!r})")
    if self.sigma_data <= 0 or self.p_std <= 0:
      raise ValueError(f"edm.sigma_data and edm.p_std must be > 0, got {self.sigma_data}, "
                       f"{self.p_std}")

  def network_fn(self, apply: ModelFn, process: Process, prediction: str) -> ModelFn:
    def denoiser(x, sigma):  # sigma: [B]
      c_skip, c_out, c_in, c_noise = preconditioning(sigma, self.sigma_data)
      shape = (x.shape[0],) + (1,) * (x.ndim - 1)
      out = apply(c_in.reshape(shape) * x, c_noise)
      return c_skip.reshape(shape) * x + c_out.reshape(shape) * out.astype(x.dtype)

    return denoiser

  def loss(self, model_fn, process, x0, rng, *, prediction, loss_type):
    return continuous_loss(
        model_fn, process, x0, rng,
        sample_times=functools.partial(sample_sigmas, p_mean=self.p_mean, p_std=self.p_std),
        prediction=prediction, loss_type=loss_type,
        weight_fn=functools.partial(loss_weight, sigma_data=self.sigma_data))

  def sampling_prediction(self, prediction: str) -> str:
    return prediction


def make_edm(config: Any, *, image_shape: tuple[int, int, int],
             guidance_scale: float | None = None) -> ddpm_lib.DDPM:
  """The EDM `DDPM` (`EDM` process, `EDMObjective`, the 'edm' sampler's settings) of a config's
  `model`, `diffusion`, `edm`, `optim`, `train` and `sample` blocks (experiments/ddpm/base.py
  `edm`), on arrays of `image_shape`."""
  fields = ddpm_lib.denoiser_fields(config, image_shape=image_shape,
                                    guidance_scale=guidance_scale)
  e, s = config.edm, config.sample
  objective = EDMObjective(sigma_data=float(e.sigma_data), p_mean=float(e.p_mean),
                           p_std=float(e.p_std))
  process = EDM(sigma_min=float(e.sigma_min), sigma_max=float(e.sigma_max))
  return ddpm_lib.denoiser_class(fields)(
      **fields, schedule=process, objective=objective, rho=float(s.rho),
      s_churn=float(s.s_churn), s_tmin=float(s.s_tmin), s_tmax=float(s.s_tmax),
      s_noise=float(s.s_noise))


def make_method(config: Any) -> ddpm_lib.DDPM:
  """EDM on the config's images (`make_edm`)."""
  size = config.data.image_size
  return make_edm(config, image_shape=(size, size, config.data.channels))
