"""Latent-diffusion inpainting of CelebA-HQ faces at 256x256 on the 32x32x4 latents (f = 8) of a
frozen experiments/first_stage/vqgan_celebahq.py run, for GPU.

  python launch.py --config experiments/first_stage/vqgan_celebahq.py \
      --workdir /tmp/vqgan_celebahq ...
  python launch.py --config experiments/ldm/celebahq.py --workdir /tmp/ldm_celebahq \
      --config.init_from.workdir=/tmp/vqgan_celebahq \
      --config.data.source=derived:mask:box:folder:/data/celebahq256
  python launch.py --config experiments/ldm/celebahq.py --workdir /tmp/ldm_celebahq \
      --mode=sample --config.sample.source=/my/faces   # centre-masked own images

`diffusion.ldm_image` with ``ldm.task = "inpaint"`` (LDM's inpainting model, ``inpainting_big``:
the noisy latent concatenated with the scaled encoding of the masked image and the mask at
the latent resolution, 4 + 4 + 1 input channels here, 3 + 3 + 1 in the paper's f = 4 model).
Paper settings: U-Net ch 256, ch_mult (1, 2, 3, 4) (32, 16, 8, 4), 2 residual blocks,
attention at 16, 8 and 4 (the paper's attention_resolutions 8, 4, 2 as downsampling factors of
its 64x64 latents, i.e. the three coarser levels), linear betas 0.0015..0.0205 (T = 1000;
LDM's are linear in sqrt(beta), jgen's 'linear' in beta), eps-prediction, Adam at 1e-6 x batch
(LDM's base_learning_rate scaled by the batch), EMA 0.9999, no guidance, known pixels pasted
back. Differences named: the paper's CelebA-HQ model is unconditional LDM-4 (f = 4) and its
inpainting model is trained on Places with LaMa masks; this config uses f = 8 and
`jgen.data.derived`'s box masks. Data: ``tfds:celeb_a_hq/256`` (manual download, prepared) or
``folder:PATH``. `:smoke` builds in seconds (tests only).
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  smoke = parse_arg(arg, **ARGS).smoke
  c = _base.get_config("diffusion.ldm_image", smoke=smoke)
  c.data.source = "derived:mask:box:tfds:celeb_a_hq/256"
  c.data.channels = 3
  c.data.random_flip = True
  c.init_from.workdir = "/tmp/vqgan_celebahq"
  c.ldm.task = "inpaint"
  c.ldm.paste = True
  c.model.num_classes = 0
  c.model.dropout = 0.0
  c.model.attn_resolutions = (2,)
  c.diffusion.beta_start = 0.0015
  c.diffusion.beta_end = 0.0205
  c.diffusion.cond_drop_prob = 0.0
  c.sample.guidance_scale = 1.0
  c.eval.features = "inception"
  c.eval.num_samples = 16
  if smoke:
    return c
  _base.paper_schedule(c, batch_size=48, num_steps=400_000)
  c.data.image_size = 256
  c.model.ch = 256
  c.model.ch_mult = (1, 2, 3, 4)
  c.model.num_res_blocks = 2
  c.model.attn_resolutions = (16, 8, 4)
  c.model.num_groups = 32
  c.sample.num = c.sample.batch_size = 16
  c.eval.num_samples = 2000
  return c
