"""4x super-resolution latent diffusion on MNIST: 8x8 low-resolution digits -> 32x32, on the
8x8x8 latents of a frozen experiments/first_stage/vqgan_mnist.py run.

  python launch.py --config experiments/first_stage/vqgan_mnist.py --workdir /tmp/vqgan_mnist
  python launch.py --config experiments/ldm/sr_mnist.py --workdir /tmp/ldm_sr_mnist \
      --config.init_from.workdir=/tmp/vqgan_mnist
  python launch.py --config experiments/ldm/sr_mnist.py --workdir /tmp/ldm_sr_mnist \
      --mode=sample   # low-resolution | upsampled | original, one row per held-out digit

`diffusion.ldm_image` with ``ldm.task = "sr"`` (LDM's super-resolution model, ``bsr_sr``): the
data are `jgen.data.derived`'s ``downsample:4`` pairs (4x4 block means, repeated 4x4), and the
U-Net input is the noisy latent concatenated with the low-resolution image at its own
resolution, 8x8, which is the latent resolution at f = 4 (no resampling, as LDM concatenates
its 64x64 inputs to the 64x64 latents of 256x256 images). Data: ``tfds:mnist`` (prepared under
data.data_dir) or ``--config.data.source=derived:downsample:4:idx:DIR``; the real MNIST test
set alone is ``../shared/data/mnist-test`` (it has no train split). U-Net: ch 64, ch_mult
(1, 2), attention at 4x4 and the middle; CFG off (``diffusion.cond_drop_prob`` 0.1 and
``sample.guidance_scale`` to use it). `:smoke` is the tests' 2x SR of 8x8 digits on a
vqgan_digits:smoke first stage (4x4 latents: 4x4 low-resolution images, again unresampled).
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  smoke = parse_arg(arg, **ARGS).smoke
  c = _base.get_config("diffusion.ldm_image", smoke=smoke)
  c.ldm.task = "sr"
  c.ldm.paste = True              # inpainting only
  c.model.num_classes = 0
  c.diffusion.cond_drop_prob = 0.0
  c.sample.guidance_scale = 1.0
  c.eval.num_samples = 16
  if smoke:
    c.data.source = "derived:downsample:2:digits"
    c.eval.features = "domain:digits"
    return c
  c.data.source = "derived:downsample:4:tfds:mnist"
  c.data.image_size = 32
  c.data.batch_size = 128
  c.init_from.workdir = "/tmp/vqgan_mnist"
  c.model.ch = 64
  c.model.num_res_blocks = 2
  c.model.attn_resolutions = (4,)
  c.model.num_groups = 16
  c.optim.lr = 2e-4
  c.optim.warmup_steps = 500
  c.train.num_steps = 20_000
  c.train.ema_decay = 0.9999
  c.train.checkpoint_every = 2000
  c.train.eval_every = 2000
  c.sample.num = c.sample.batch_size = 64
  c.eval.features = "none"        # domain:mnist takes 28x28
  c.eval.num_samples = 2000
  return c
