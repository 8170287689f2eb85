"""Imagic (Kawar et al. 2023): edit one real image toward a target prompt with the text latent
diffusion model, `config.method = "diffusion.imagic"`.

For the input image x (its scaled latent z) and the target prompt's context e_tgt =
E_text(target), one run of ``imagic.embed_steps + imagic.tune_steps`` steps does the paper's
three stages:

1. **Embedding optimization** (steps 1..embed_steps; the model frozen): e_opt = e_tgt + delta,
   delta from 0, minimizing the DDPM loss of z given the context e_opt (Adam at
   ``imagic.embed_lr``).
2. **Fine-tuning** (the remaining steps; e_opt fixed): the U-Net minimizes the same loss given
   e_opt (Adam at ``optim.lr``), so that e_opt reproduces x closely.
3. **Interpolation** (sampling): the fine-tuned model samples with
   e(eta) = eta e_tgt + (1 - eta) e_opt, classifier-free guided against the empty prompt;
   ``--mode=sample`` writes the sweep eta = 0, 1 / (n - 1), ..., 1 over ``sample.num`` images
   (the same noise for every eta); ``sample_eta`` samples one eta.

Each step averages the loss over ``imagic.noise_draws`` (t, noise) draws of the one image. The
text encoder and the first stage stay frozen; the base comes in through ``init_from.base``
(its EMA weights), as for `jgen.diffusion.ip_adapter`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jgen.diffusion import ldm as ldm_lib
from jgen.diffusion.guidance import cfg_eps_fn
from jgen.diffusion.losses import ddpm_loss
from jgen.train import rules as rules_lib
from jgen.train.optim import make_optimizer
from jgen.train.state import TrainState, per_network

__all__ = ["IMAGIC_RULES", "Imagic", "make_method"]

IMAGIC_RULES = rules_lib.parse_rules(((r"text_encoder/.*", "frozen"),))
OFFSET = "imagic"


@dataclasses.dataclass(frozen=True, eq=False)
class Imagic:
  """The three Imagic stages on a `TextLatentDiffusion` (module docstring).

  Attributes:
    ldm: the text latent diffusion method (its U-Net, text encoder, first stage, sampler).
    target_tokens: int32 [L], the target prompt.
    embed_steps: stage-1 steps; the rest of the run is stage 2.
    noise_draws: (t, noise) draws of the image per step.
    embed_tx, tune_tx: the stages' optimizers (of delta and of the U-Net).
  """

  ldm: ldm_lib.TextLatentDiffusion
  target_tokens: np.ndarray
  embed_steps: int
  noise_draws: int = 8
  embed_tx: optax.GradientTransformation | None = None
  tune_tx: optax.GradientTransformation | None = None

  def target_context(self, params: Any, frozen: Any) -> jax.Array:
    """e_tgt [1, L, D]: the frozen text encoder's context of the target prompt."""
    encoder = self.ldm.encoder_params(params, frozen)
    return self.ldm.context(encoder, jnp.asarray(self.target_tokens)[None])

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
    ldm = self.ldm
    ae, z, scale = ldm.first_stage_init(batch["image"])
    encoder_rng, unet_rng, state_rng = jax.random.split(rng, 3)
    tokens = jnp.asarray(self.target_tokens)[None]
    encoder = ldm.text_encoder.init(encoder_rng, tokens, ldm.tokenizer.mask(tokens))
    context = ldm.context(encoder, tokens)
    unet = ldm.ddpm.model.init(unet_rng, z[:1] * scale, jnp.zeros((1,), jnp.int32),
                               {"context": context}, train=False)
    params = {"unet": unet, ldm_lib.TEXT_FROZEN: encoder,
              OFFSET: {"delta": jnp.zeros(context.shape[1:], jnp.float32)}}
    tx = per_network({"unet": self.tune_tx, OFFSET: self.embed_tx})
    return TrainState.create(params=params, tx=tx, rng=state_rng,
                             model_state={"scale_factor": scale}, frozen={ldm_lib.FROZEN: ae})

  def loss_fn(self, params, frozen: Any, model_state: Any, batch: dict[str, jax.Array],
              rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The DDPM loss of the image's latent given e_opt, over `noise_draws` draws."""
    z = self.ldm.latents(frozen, model_state, batch["image"][:1])
    z = jnp.repeat(z, self.noise_draws, axis=0)
    e_opt = self.target_context(params, frozen) + params[OFFSET]["delta"][None]
    context = jnp.repeat(e_opt, self.noise_draws, axis=0)
    model_fn = self.ldm.ddpm.model_fn(params["unet"], {"context": context}, train=True,
                                      dropout_rng=jax.random.fold_in(rng, 1))
    return ddpm_loss(model_fn, self.ldm.ddpm.schedule, z, rng,
                     prediction=self.ldm.ddpm.prediction, loss_type=self.ldm.ddpm.loss_type)

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    grads, metrics = state.grad(self.loss_fn, state.frozen, state.model_state, batch, rng)
    stage_one = state.step < self.embed_steps

    def embed(s):
      return s.apply_gradients(grads[OFFSET], network=OFFSET)

    def tune(s):
      return s.apply_gradients(grads["unet"], network="unet")

    state = jax.lax.cond(stage_one, embed, tune, state)
    return state, {**metrics, "stage": jnp.where(stage_one, 1.0, 2.0),
                   "delta_norm": jnp.linalg.norm(state.params[OFFSET]["delta"]),
                   "grad_norm": optax.global_norm(grads)}

  def sample_eta(self, state: TrainState, rng: jax.Array, eta: jax.Array | float, n: int
                 ) -> jax.Array:
    """`n` images at e(eta) = eta e_tgt + (1 - eta) e_opt (eta a scalar or [n])."""
    ldm = self.ldm
    params = state.model_params
    e_tgt = self.target_context(params, state.frozen)
    e_opt = e_tgt + params[OFFSET]["delta"][None]
    eta = jnp.broadcast_to(jnp.asarray(eta, jnp.float32), (n,))[:, None, None]
    context = eta * e_tgt + (1.0 - eta) * e_opt
    null_tokens = jnp.broadcast_to(jnp.asarray(ldm.captions[-1]), (n, ldm.tokenizer.max_len))
    null = ldm.context(ldm.encoder_params(params, state.frozen), null_tokens)

    def eps_cond_fn(x, t, c):
      return ldm.ddpm.eps_fn(params["unet"], c, train=False)(x, t)
    eps_fn = cfg_eps_fn(eps_cond_fn, {"context": context}, {"context": null},
                        ldm.guidance_scale)
    z = ldm.ddpm.run_sampler(eps_fn, rng, n)
    return ldm.decode_latents(state.frozen, state.model_state, z)

  def sample(self, state: TrainState, rng: jax.Array, n: int) -> jax.Array:
    """The eta sweep 0, 1 / (n - 1), ..., 1 (n images), every one from the same noise."""
    etas = jnp.linspace(0.0, 1.0, n)
    return jax.vmap(lambda eta: self.sample_eta(state, rng, eta, 1)[0])(etas)

  @property
  def sample_tag(self) -> str:
    return "imagic_sweep_" + self.ldm.sample_tag


def make_method(config: Any) -> Imagic:
  """Imagic of an ldm_text_digits-like config with ``init_from.base`` (the trained text latent
  diffusion run) and the ``imagic`` block (``target``, ``embed_steps``, ``embed_lr``,
  ``noise_draws``)."""
  method = ldm_lib.text_method_on_base(config, "diffusion.imagic", IMAGIC_RULES,
                                       trains="the U-Net and the embedding offset, the text "
                                       "encoder frozen")
  ic = config.imagic
  embed_steps = int(ic.embed_steps)
  if not 0 < embed_steps < int(config.train.num_steps):
    raise ValueError(f"imagic.embed_steps={embed_steps} must lie in 1..train.num_steps-1 "
                     f"({config.train.num_steps}): the rest of the run fine-tunes the model")
  method.tokenizer.check([str(ic.target)], what="imagic.target")
  target = np.asarray(method.tokenizer.encode([str(ic.target)]), np.int32)[0]
  embed_optim = {**config.optim.to_dict(), "lr": float(ic.embed_lr)}
  steps = int(config.train.num_steps)
  return Imagic(ldm=method, target_tokens=target, embed_steps=embed_steps,
                noise_draws=int(ic.noise_draws),
                embed_tx=make_optimizer(embed_optim, total_steps=steps),
                tune_tx=make_optimizer(config.optim, total_steps=steps))
