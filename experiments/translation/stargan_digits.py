"""StarGAN on 16x16 digits with synthetic domains: inverted, thick strokes, rotated by 90 degrees.

  python launch.py --config experiments/translation/stargan_digits.py --workdir /tmp/stargan_digits

Every real digit comes in a random one of the 2^3 = 8 domains (`jgen.gan.domains`), G translates
it to a random target domain, and `evaluate` measures the translations against the true
counterparts (the clean digit put in the target domain): `eval/l1` (mean over the 8 targets, in
[0, 1] units) against `eval/copy_l1` (the untranslated source, the baseline to beat),
`eval/psnr`, `eval/rec_l1`. Paper recipe (WGAN-GP, lambda_cls = 1, lambda_rec = 10,
n_critic = 5, Adam(1e-4, 0.5, 0.999), linear decay over the last half) with small networks
(ngf = ndf = 32, 3 residual blocks, D with 3 stride-2 layers to a 2x2 map), 16 images per
update (the paper's batch) and an EMA of G (0.999, not in the paper). 1,500 steps (7,500
critic updates): 0.2 s/step expected on 2 idle CPU cores (5 minutes; measured 0.55-0.6 s/step
with the cores shared by other jobs). After 150 steps eval/l1 was 0.315 against a copy_l1 of
0.393. Variant `:smoke`.
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base_stargan", beside=__file__)

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = _base.stargan_base(batch=16)  # the paper's batch per update
  c.data.source = "digits"
  c.data.image_size = 16
  c.data.channels = 1
  c.data.resize = True

  c.model.g_features = 32       # 16x16x32 -> 8x8x64 -> 4x4x128 (3 blocks) -> 16x16x1
  c.model.g_down = 2
  c.model.g_blocks = 3
  c.model.d_features = 32       # 16 -> 8x8x32 -> 4x4x64 -> 2x2x128: src 2x2, cls 2x2 kernel
  c.model.cls_kernel = 2

  c.gan.domains = ("inverted", "thick", "rot90")
  c.gan.target_sampling = "uniform"

  c.train.num_steps = 1500
  c.optim.schedule = "linear"    # constant for 750 steps, then linear decay to 0
  c.train.ema_decay = 0.999
  c.train.log_every = 100
  c.train.checkpoint_every = 500
  c.train.eval_every = 500
  c.train.eval_batches = 2
  c.train.sample_every = 0
  if a.smoke:
    c = _base.smoke(c)
  return c
