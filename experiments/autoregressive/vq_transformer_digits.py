"""A class-conditional transformer prior over the 4x4 codes of a trained vqvae_digits run.

  python launch.py --config experiments/autoencoder/vqvae_digits.py --workdir /tmp/vqvae_digits
  python launch.py --config experiments/autoregressive/vq_transformer_digits.py \
      --workdir /tmp/vqtf_digits \
      --config.init_from.workdir=/tmp/vqvae_digits
  python launch.py --config experiments/autoregressive/vq_transformer_digits.py \
      --workdir /tmp/vqtf_digits \
      --mode=eval     # held-out nats / bits per code
  python launch.py --config experiments/autoregressive/vq_transformer_digits.py \
      --workdir /tmp/vqtf_digits \
      --mode=sample --config.sample.temperature=0.9 --config.sample.top_k=32

The VQ-VAE (its EMA parameters) is frozen in ``state.frozen["vqvae"]``; its architecture comes
from its run record, so only the data (16x16 digits, as vqvae_digits) must match. The prior: a
2-block, width-64, 4-head GPT over the 16 codes in raster order with the digit class as its
prefix token; cross-entropy in nats per code. About 24k training codes (1,500 digits x 16)
overfit a larger prior fast: a 4-block width-128 one with dropout 0.1 reached 2.57 held-out
nats/code at step 500 and got worse after (2.94 at step 1000), so this one is small, with
dropout 0.3 and weight decay 0.1 (2.57 at step 1500, still improving slowly; about 2.5 min on
2 CPU cores). ``init_from.workdir`` defaults to the /tmp/vqvae_digits of the commands above.
Samples: every class in turn, 10 per row, decoded by the frozen decoder; temperature 1, no
top-k / top-p by default. Variant `:vqgan` is the same prior over a vqgan_digits run's codes
(its autoencoder subtree, default workdir /tmp/vqgan_digits):

  python launch.py --config experiments/first_stage/vqgan_digits.py --workdir /tmp/vqgan_digits
  python launch.py --config experiments/autoregressive/vq_transformer_digits.py:vqgan \
      --workdir /tmp/vqtf_gan

`:smoke` and `:vqgan,smoke` are the tests' seconds-long runs (on vqvae_digits:smoke and
vqgan_digits:smoke runs).
"""

import ml_collections

from jgen.train.config import base_config, parse_arg

ARGS = dict(smoke=False, vqgan=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  smoke = a.smoke
  c = base_config()
  c.method = "autoregressive.code_transformer"

  c.data.source = "digits"
  c.data.image_size = 8 if smoke else 16  # the VQ run's (vqvae_digits:smoke is 8x8)
  c.data.channels = 1
  c.data.resize = True
  c.data.batch_size = 8 if smoke else 64

  c.init_from.workdir = "/tmp/vqvae_digits"
  c.init_from.into = "frozen/vqvae"
  c.init_from.source = "ema"
  if a.vqgan:  # the VQ-GAN's autoencoder (encode_indices' params; no critic)
    c.init_from.workdir = "/tmp/vqgan_digits"
    c.init_from.subtree = "autoencoder"

  c.model.width = 32 if smoke else 64
  c.model.depth = 1 if smoke else 2
  c.model.num_heads = 2 if smoke else 4
  c.model.mlp_ratio = 4
  c.model.dropout = 0.3
  c.model.num_classes = 10

  c.optim.name = "adamw"
  c.optim.lr = 1e-3
  c.optim.weight_decay = 0.1
  c.optim.warmup_steps = 0 if smoke else 100
  c.optim.schedule = "constant" if smoke else "cosine"
  c.optim.grad_clip_norm = 1.0

  c.train.num_steps = 4 if smoke else 1500
  c.train.ema_decay = 0.999
  c.train.ema_warmup = True
  c.train.log_every = 2 if smoke else 100
  c.train.checkpoint_every = 4 if smoke else 1500
  c.train.eval_every = 4 if smoke else 250
  c.train.eval_batches = 1 if smoke else 4

  c.sample.num = 10 if smoke else 100
  c.sample.batch_size = 10 if smoke else 100
  c.sample.temperature = 1.0
  c.sample.top_k = 0              # 0: off; else keep the k most likely codes
  c.sample.top_p = 1.0            # 1: off; else the nucleus of probability mass p
  c.sample.cached = True          # the key/value-cache sampler (False: the uncached reference)
  return c
