"""A transformer prior over the codes of a frozen VQ model: ``config.method =
"autoregressive.code_transformer"``.

The second stage of VQ-VAE (van den Oord et al. 2017) and VQ-GAN (Esser et al. 2021): a frozen
first stage maps an image to an ``r x r`` map of code indices ``c``; a decoder-only transformer
(`jgen.nn.transformer.Transformer`) models them in raster order,

    log p(c | y) = sum_i log p(c_i | c_<i, y),

with the class ``y`` as the prefix token (``model.num_classes > 0``) or a learned start token.
The loss is the cross-entropy in nats per code, ``-1/N sum_i log p(c_i | c_<i, y)``, also
reported in bits per code (divided by ln 2). `--mode=sample` draws codes with the cached
sampler (`jgen.autoregressive.sampling`, temperature / top-k / top-p from ``config.sample``) and
decodes them with the frozen decoder.

The first stage comes from another run: ``--config.init_from.workdir=<VQ run>`` with
``init_from.into="frozen/vqvae"`` puts its EMA parameters in ``state.frozen["vqvae"]`` (never
optimized, stored in this run's checkpoints); its architecture is rebuilt from that run's
record (`jgen.train.run_record.latest_config`), so this config repeats none of it. Any
`jgen.train.method.DiscreteCodes` method serves: `autoencoder.vqvae`, and the VQ-GAN of
`autoencoder.first_stage` with ``init_from.subtree="autoencoder"`` (its ``codes_subtree``: the
critic is not loaded). The VQ run's work directory must stay readable for its record whenever
this run's method is built (train, eval, sample).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jgen.autoregressive import sampling
from jgen.nn.transformer import Transformer
from jgen.train import init_from as init_from_lib
from jgen.train import run_record
from jgen.train.method import DiscreteCodes, load_method
from jgen.train.optim import make_optimizer
from jgen.train.state import TrainState

__all__ = ["CodeTransformer", "ConditionalCodeTransformer", "FROZEN", "load_vq_model",
           "make_method"]

FROZEN = "vqvae"  # state.frozen key of the first stage (init_from.into = "frozen/vqvae")


def load_vq_model(workdir: str) -> tuple[DiscreteCodes, Any]:
  """The first-stage method of a trained VQ run, rebuilt from its run record, and its config.

  Raises:
    ValueError: `workdir` has no run record, or its method is not a `DiscreteCodes` one with a
      VQ bottleneck.
  """
  config = run_record.latest_config(workdir)
  method = load_method(config)
  problem = None
  if not isinstance(method, DiscreteCodes):
    problem = "it has no codebook (encode_indices, decode_indices, num_codes, codes_subtree)"
  elif getattr(method, "bottleneck", "vq") != "vq":  # a first stage with a KL bottleneck
    problem = f"its bottleneck is {method.bottleneck!r}, not 'vq'"
  if problem:
    raise ValueError(
        f"init_from.workdir={workdir!r} is a {config.get('method')!r} run, not a VQ model: "
        f"{problem}. The code transformer needs a first stage with discrete codes: train one "
        "with experiments/autoencoder/vqvae_digits.py or "
        "experiments/first_stage/vqgan_digits.py and point --config.init_from.workdir at it.")
  return method, config


@dataclasses.dataclass(frozen=True, eq=False)
class CodeTransformer:
  """The unconditional prior (see the module docstring); `ConditionalCodeTransformer` adds
  class conditioning.

  Attributes:
    vq: the frozen first-stage method (encode_indices / decode_indices / init).
    model: the transformer over ``grid[0] * grid[1]`` codes.
    tx: optimizer of the transformer.
    grid: the code map's shape ``(r, r)``.
    vq_workdir: the first stage's run (for messages).
    ema_decay, ema_warmup: parameter EMA used by `evaluate` and `sample`.
    temperature, top_k, top_p: sampling filters (`jgen.autoregressive.sampling`).
    cached: sample with the key/value cache (False: the uncached reference sampler).
  """

  vq: Any
  model: Transformer
  tx: optax.GradientTransformation
  grid: tuple[int, int]
  vq_workdir: str = ""
  ema_decay: float = 0.999
  ema_warmup: bool = True
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  cached: bool = True

  @property
  def length(self) -> int:
    return self.grid[0] * self.grid[1]

  def _label(self, batch: dict[str, jax.Array]) -> jax.Array | None:
    return None

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
    """Random transformer; ``frozen["vqvae"]`` gets the first stage's structure (its arrays
    are replaced by `init_from` before anything trains)."""
    vq_rng, net_rng, state_rng = jax.random.split(rng, 3)
    frozen = init_from_lib.subtree(self.vq.init(vq_rng, batch).params, self.vq.codes_subtree,
                                   "the first stage's parameters")
    tokens = jnp.zeros((1, self.length), jnp.int32)
    label = None if self.model.num_classes == 0 else jnp.zeros((1,), jnp.int32)
    params = self.model.init(net_rng, tokens, label=label)["params"]
    return TrainState.create(params={"transformer": params}, tx=self.tx, rng=state_rng,
                             ema_decay=self.ema_decay, ema_warmup=self.ema_warmup,
                             frozen={FROZEN: frozen})

  def codes(self, frozen: dict[str, Any], images: jax.Array) -> jax.Array:
    """int32 code indices ``[B, r * r]`` (raster order) of images in [-1, 1]."""
    indices = self.vq.encode_indices(frozen[FROZEN], images)
    return jax.lax.stop_gradient(indices.reshape(indices.shape[0], -1))

  def loss_fn(self, params, frozen, batch: dict[str, jax.Array], rng: jax.Array, *,
              train: bool = True) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Cross-entropy in nats per code, with bits per code and next-code accuracy."""
    codes = self.codes(frozen, batch["image"])
    logits = self.model.apply({"params": params["transformer"]}, codes,
                              label=self._label(batch), train=train,
                              rngs={"dropout": rng} if train else None)
    nats = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, codes))
    accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == codes)
    return nats, {"loss": nats, "nats_per_code": nats, "bits_per_code": nats / math.log(2),
                  "accuracy": accuracy}

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    return state.gradient_step(self.loss_fn, state.frozen, batch, rng)

  def evaluate(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
               ) -> dict[str, jax.Array]:
    """Held-out nats (and bits) per code and accuracy of the EMA parameters."""
    _, metrics = self.loss_fn(state.ema_params, state.frozen, batch, rng, train=False)
    return metrics

  def sample_codes(self, params, rng: jax.Array, n: int, label: jax.Array | None = None
                   ) -> jax.Array:
    """``[n, r * r]`` sampled codes (the cached sampler unless ``cached=False``)."""
    variables = {"params": params["transformer"]}
    kw = dict(length=self.length, temperature=self.temperature, top_k=self.top_k,
              top_p=self.top_p)
    if not self.cached:
      logits_fn = lambda tokens: self.model.apply(variables, tokens, label=label)
      return sampling.sample_uncached(logits_fn, rng, batch_size=n, **kw)
    prefill = lambda: self.model.apply(variables, n, label=label, method=Transformer.prefill)
    decode = lambda token, cache, i: self.model.apply(variables, token, cache, i,
                                                      method=Transformer.decode)
    return sampling.sample_cached(prefill, decode, rng, **kw)

  def decode_codes(self, frozen: dict[str, Any], codes: jax.Array) -> jax.Array:
    """Images in [-1, 1] from codes ``[n, r * r]`` through the frozen decoder."""
    indices = codes.reshape(codes.shape[0], *self.grid)
    return jnp.clip(self.vq.decode_indices(frozen[FROZEN], indices), -1.0, 1.0)

  def sample(self, state: TrainState, rng: jax.Array, n: int) -> jax.Array:
    codes = self.sample_codes(state.ema_params, rng, n)
    return self.decode_codes(state.frozen, codes)

  @property
  def sample_tag(self) -> str:
    tag = f"codes_T{self.temperature:g}"
    if self.top_k:
      tag += f"_k{self.top_k}"
    if self.top_p < 1.0:
      tag += f"_p{self.top_p:g}"
    return tag


@dataclasses.dataclass(frozen=True, eq=False)
class ConditionalCodeTransformer(CodeTransformer):
  """The class-conditional prior: the label is the transformer's prefix token."""

  @property
  def num_classes(self) -> int:
    return self.model.num_classes

  def _label(self, batch: dict[str, jax.Array]) -> jax.Array:
    if "label" not in batch:
      raise ValueError("a class-conditional code transformer (model.num_classes > 0) trains "
                       "on batches with a 'label' field; use a labelled data source or set "
                       "model.num_classes=0")
    return batch["label"].astype(jnp.int32)

  def sample_conditional(self, state: TrainState, rng: jax.Array,
                         conditions: dict[str, jax.Array], n: int) -> jax.Array:
    """Samples of the classes ``conditions["label"]`` [n]."""
    codes = self.sample_codes(state.ema_params, rng, n, label=conditions["label"])
    return self.decode_codes(state.frozen, codes)

  def sample(self, state: TrainState, rng: jax.Array, n: int) -> jax.Array:
    """Every class in turn (0, 1, ..., K-1, 0, ...)."""
    return self.sample_conditional(
        state, rng, {"label": jnp.arange(n, dtype=jnp.int32) % self.num_classes}, n)


def make_method(config: Any) -> CodeTransformer:
  """Translates a config (`init_from`, `model`, `optim`, `train`, `sample`) into the method.

  Raises:
    ValueError: no first-stage load, a first stage that is not a VQ model, or data settings
      that differ from the first stage's.
  """
  spec = init_from_lib.frozen_load(
      config, FROZEN, hint=" (experiments/autoregressive/vq_transformer_digits.py sets the latter)",
      needs="autoregressive.code_transformer is a prior over the codes of a trained VQ model: "
            "set --config.init_from.workdir=<a VQ run's workdir>")
  vq, vq_config = load_vq_model(spec.workdir)
  size, channels = config.data.image_size, config.data.channels
  if (size, channels) != (vq_config.data.image_size, vq_config.data.channels):
    raise ValueError(
        f"data.image_size/channels = {size}/{channels}, but the VQ run {spec.workdir} was "
        f"trained on {vq_config.data.image_size}/{vq_config.data.channels}: set them to match")
  image = jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32)
  if spec.subtree != vq.codes_subtree:
    raise ValueError(
        f"init_from.subtree={spec.subtree!r}, but a {vq_config.method!r} first stage's codes "
        f"need its {vq.codes_subtree or 'whole'!r} parameters: set "
        f"--config.init_from.subtree={vq.codes_subtree!r}")
  abstract = jax.eval_shape(
      lambda r, x: init_from_lib.subtree(vq.init(r, {"image": x}).params, vq.codes_subtree,
                                         "the first stage's parameters"),
      jax.random.key(0), image)
  indices = jax.eval_shape(vq.encode_indices, abstract, image)
  grid = tuple(int(d) for d in indices.shape[1:])
  m = config.model
  model = Transformer(vocab_size=int(vq.num_codes), seq_len=grid[0] * grid[1],
                      width=m.width, depth=m.depth, num_heads=m.num_heads,
                      mlp_ratio=m.mlp_ratio, dropout=m.dropout, num_classes=m.num_classes,
                      dtype=jnp.dtype(m.dtype))
  s = config.sample
  cls = ConditionalCodeTransformer if m.num_classes > 0 else CodeTransformer
  return cls(vq=vq, model=model, tx=make_optimizer(config.optim,
                                                   total_steps=config.train.num_steps),
             grid=grid, vq_workdir=spec.workdir, ema_decay=config.train.ema_decay,
             ema_warmup=config.train.ema_warmup, temperature=s.temperature,
             top_k=s.top_k, top_p=s.top_p, cached=s.cached)
