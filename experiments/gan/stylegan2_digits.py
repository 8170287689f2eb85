"""StyleGAN2 on scikit-learn's digits at 16x16 (Karras et al. 2020).

  python launch.py --config experiments/gan/stylegan2_digits.py --workdir /tmp/stylegan2_digits
  python launch.py --config experiments/gan/stylegan2_digits.py --workdir /tmp/stylegan2_digits \\
      --mode=sample --config.sample.truncation=0.7
  python launch.py --config experiments/gan/stylegan2_digits.py --workdir /tmp/stylegan2_digits \\
      --mode=eval

The paper's method at a CPU's scale: an 8-layer mapping network (learning-rate multiplier
0.01), modulated/demodulated convolutions with noise inputs, the skip generator and the
residual discriminator with minibatch stddev (group 4); the non-saturating loss, lazy R1
(every 16 steps), lazy path-length regularization (weight 2, every 4 steps, half batch),
style mixing with probability 0.9, Adam(0.0025, 0, 0.99, 1e-8), EMA generator. Narrower than
the paper (`model.features` per block, 4x4 first). `--mode=sample` also writes the
style-mixing figure; `--mode=eval` reports domain FID, precision/recall and PPL (W space, the
digits classifier's features as the distance) at psi = 1 and at `sample.truncation`.

R1's gamma is 0.05 (stylegan2-ada's heuristic 0.0002 R^2 / batch gives 0.0016 at 16x16,
batch 32; untuned here: a chosen value, not a measured optimum). 2,500 steps of batch 32
(80k images) fit the 10-minute CPU budget.

Variants: `:cond` (class-conditional: the label embedded in the mapping input, projection
discriminator), `:smoke` (8x8, a seconds-long run), `:cond,smoke`.
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg, smoke_schedule

_base = experiment_module("base", beside=__file__)

ARGS = dict(smoke=False, cond=False)


def model_config(*, features, z_dim: int, w_dim: int, mapping_layers: int,
                 mbstd_group: int, d_architecture: str = "resnet", conv: str = "im2col",
                 dtype: str = "float32") -> ml_collections.ConfigDict:
  """The `model` block of a StyleGAN2 config."""
  return ml_collections.ConfigDict(dict(
      features=tuple(features), d_features=(), z_dim=z_dim, w_dim=w_dim,
      mapping_layers=mapping_layers, d_mapping_layers=mapping_layers,
      d_architecture=d_architecture, mbstd_group=mbstd_group, conv=conv, dtype=dtype))


def stylegan2_gan(c: ml_collections.ConfigDict, *, r1_gamma: float, pl_weight: float = 2.0,
                  style_mixing: float = 0.9) -> ml_collections.ConfigDict:
  """StyleGAN2's loss and regularizers in `c.gan` (ADA fields kept from base_gan)."""
  g = c.gan
  g.loss = "non_saturating"
  g.r1_gamma = r1_gamma
  g.r1_every = 16
  g.style_mixing = style_mixing
  g.pl_weight = pl_weight
  g.pl_every = 4
  g.pl_decay = 0.01
  g.pl_batch_shrink = 2
  g.w_avg_beta = 0.995
  c.optim.name = "adam"
  c.optim.lr = 0.0025
  c.optim.b1 = 0.0
  c.optim.b2 = 0.99
  c.optim.eps = 1e-8
  c.optim.grad_clip_norm = 0.0
  c.sample.truncation = 1.0
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  smoke = a.smoke
  c = _base.gan_base(smoke=smoke)
  c.method = "gan.stylegan2"
  c.data.batch_size = 32
  c.model = model_config(features=(64, 64, 32), z_dim=64, w_dim=64, mapping_layers=8,
                         mbstd_group=4)
  stylegan2_gan(c, r1_gamma=0.05)
  c.gan.num_classes = 10 if a.cond else 0

  c.train.num_steps = 2500
  c.train.ema_decay = 0.999
  c.train.ema_warmup = True
  c.train.log_every = 100
  c.train.checkpoint_every = 500
  c.train.sample_every = 500

  c.eval.metrics = "fid,pr,ppl"
  c.eval.num_samples = 1000
  c.eval.ppl_samples = 1000
  c.eval.ppl_epsilon = 1e-4
  if smoke:
    c.data.batch_size = 8
    c.model = model_config(features=(4, 4), z_dim=8, w_dim=8, mapping_layers=2,
                           mbstd_group=4)
    smoke_schedule(c, num_steps=4)
    c.eval.num_samples = 16
    c.eval.ppl_samples = 8
  return c
