"""The flow family's base: likelihood, optimizer, schedule and sampling defaults, the Glow and
RealNVP model blocks, and the method argument of the multi-method experiments.

Every flow experiment (glow_digits, realnvp_digits, flow_mnist, flow_cifar) starts from
`get_config(method, additive=...)` and sets its data and scale; no experiment file loads
another, so changing a CPU recipe changes no other run. Loaded by path:
`experiment_module("base", beside=__file__)`.
"""

import ml_collections

from jgen.train.config import base_config, digits_data, smoke_schedule

METHODS = ("glow", "realnvp")


def get_config(method: str, *, additive: bool = False) -> ml_collections.ConfigDict:
  """Flow defaults and `method`'s model block (Glow: affine or `additive` couplings); no data."""
  c = base_config()
  c.flow = ml_collections.ConfigDict()
  c.flow.n_bits = 8
  c.flow.preprocessing = "center"   # center (Glow) | symmetric | logit (RealNVP)
  c.flow.logit_alpha = 0.05

  c.optim.name = "adam"
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 100
  c.optim.schedule = "cosine"
  c.optim.grad_clip_norm = 50.0

  c.train.num_steps = 2000
  c.train.ema_decay = 0.999
  c.train.ema_warmup = True
  c.train.log_every = 100
  c.train.checkpoint_every = 1000
  c.train.eval_every = 500
  c.train.eval_batches = 4
  c.train.sample_every = 0

  c.sample.temperature = 0.7
  c.sample.num = 64
  c.sample.batch_size = 64
  if method == "glow":
    c.method = "flow.glow"
    c.model.num_levels = 2
    c.model.num_steps = 8
    c.model.hidden = 64
    c.model.coupling = "additive" if additive else "affine"
    c.model.lu = True
    c.model.learn_top = True
  elif method == "realnvp":
    c.method = "flow.realnvp"
    c.flow.preprocessing = "logit"
    c.model.num_levels = 2
    c.model.hidden = 32
    c.model.num_blocks = 2
    c.model.actnorm = True
  else:
    raise ValueError(f"unknown flow method {method!r}; choose one of {METHODS}")
  return c


def digits(c: ml_collections.ConfigDict, *, smoke: bool = False) -> ml_collections.ConfigDict:
  """scikit-learn's digits resized to 16x16 (`smoke`: 8x8 and a seconds-long run)."""
  digits_data(c, smoke=smoke)
  if smoke:
    smoke_schedule(c)
  return c


def smoke(c: ml_collections.ConfigDict, method: str) -> ml_collections.ConfigDict:
  """The `,smoke` option of flow_mnist / flow_cifar: a tiny model on the same data shape."""
  c.model.num_levels = 2
  c.model.hidden = 8
  if method == "glow":
    c.model.num_steps = 1
  else:
    c.model.num_blocks = 1
  c.data.batch_size = 8
  c.optim.warmup_steps = 0
  c.optim.schedule = "constant"
  c.train.num_steps = 2
  c.train.log_every = 1
  c.train.checkpoint_every = 2
  c.train.eval_every = 2
  c.train.eval_batches = 1
  c.train.sample_every = 0
  c.sample.num = 8
  c.sample.batch_size = 8
  return c
