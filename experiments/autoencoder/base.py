"""The autoencoder family's base: model, optimizer and schedule defaults and each method's block.

Every autoencoder experiment (ae/dae/vae/vqvae_digits, autoencoder_mnist, autoencoder_cifar)
starts from `get_config(method, variant)` and sets its data and scale; no experiment file loads
another, so changing a CPU recipe changes no other run. Loaded by path:
`experiment_module("base", beside=__file__)`.
"""

import ml_collections

from jgen.train.config import base_config, digits_data, smoke_schedule

METHODS = ("ae", "dae", "vae", "vqvae")


def _method_block(c: ml_collections.ConfigDict, method: str, variant: str | None) -> None:
  """`config.method` and its block; `variant` is the method's option ('mae' for ae, 'dropout'
  for dae, 'logistic' or 'gaussian' for vae, 'grad' for vqvae)."""
  c.method = f"autoencoder.{method}"
  if method in ("ae", "dae"):
    c.ae = ml_collections.ConfigDict()
    c.ae.loss = "mae" if variant == "mae" else "mse"
    if method == "ae":
      c.ae.corruption, c.ae.corruption_level = "none", 0.0
    elif variant == "dropout":
      c.ae.corruption, c.ae.corruption_level = "dropout", 0.3
    else:
      c.ae.corruption, c.ae.corruption_level = "gaussian", 0.5
  elif method == "vae":
    c.vae = ml_collections.ConfigDict()
    c.vae.likelihood = variant if variant in ("logistic", "gaussian") else "bernoulli"
    c.vae.beta = 1.0
    c.vae.kl_warmup_steps = 300
    c.vae.iwae_k = 100
  elif method == "vqvae":
    c.model.spatial = True
    c.vq = ml_collections.ConfigDict()
    c.vq.num_codes = 128
    c.vq.code_dim = 16
    c.vq.beta = 0.25
    c.vq.ema = variant != "grad"
    c.vq.decay = 0.99
    c.vq.epsilon = 1e-5
    c.vq.restart_every = 100
    c.vq.restart_threshold = 0.03
  else:
    raise ValueError(f"unknown autoencoder method {method!r}; choose one of {METHODS}")


def get_config(method: str, variant: str | None = None) -> ml_collections.ConfigDict:
  """Network, optimizer, schedule and sampling defaults with `method`'s block (no data)."""
  c = base_config()
  c.model.ch = 16
  c.model.ch_mult = (1, 2, 2)
  c.model.num_res_blocks = 1
  c.model.num_groups = 4
  c.model.dropout = 0.0
  c.model.spatial = False
  c.model.latent_dim = 16

  c.optim.name = "adam"
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 50
  c.optim.schedule = "cosine"
  c.optim.grad_clip_norm = 0.0

  c.train.num_steps = 1500
  c.train.ema_decay = 0.99
  c.train.ema_warmup = True
  c.train.log_every = 100
  c.train.checkpoint_every = 1500
  c.train.eval_every = 500
  c.train.eval_batches = 5
  c.train.sample_every = 0

  c.sample.num = 64
  c.sample.batch_size = 64
  _method_block(c, method, variant)
  return c


def digits(c: ml_collections.ConfigDict, *, smoke: bool = False) -> ml_collections.ConfigDict:
  """scikit-learn's digits resized to 16x16 (`smoke`: 8x8 and a seconds-long run)."""
  digits_data(c, smoke=smoke)
  if smoke:
    c.model.ch = 8
    c.model.ch_mult = (1, 2)
    c.model.num_res_blocks = 0  # compile time dominates the tests (blocks: test_networks)
    c.model.num_groups = 4
    c.model.latent_dim = 4
    smoke_schedule(c)
  return c
