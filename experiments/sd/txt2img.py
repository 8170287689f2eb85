"""Stable Diffusion text-to-image from a converted checkpoint (`jgen.diffusion.stable_diffusion`).

  python -m jgen.convert path/to/stable-diffusion-v1-5 /tmp/sd15     # a diffusers folder or a
                                                                    # single .ckpt/.safetensors
  python launch.py --config experiments/sd/txt2img.py --workdir /tmp/sd15 --mode=sample \
      --config.sample.prompts="a photo of an astronaut riding a horse"
  # SD 2.x (v-prediction, 768 px, OpenCLIP text encoder): experiments/sd/txt2img.py:arch=sd21
  # a community LoRA / embedding: --config.lora.file=x.safetensors --config.lora.scale=0.8
  #   --config.textual_inversion.file=learned_embeds.safetensors (then use its token in prompts)
  # several prompts: --config.sample.prompts="a red apple|a castle, oil painting"
  # other samplers: --config.sample.sampler=dpmpp_2m (euler, heun, ddim, ddpm)

Variants ``:arch=ARCH``: ``sd15`` (default: SD 1.x's architecture), ``sd21`` (SD 2.x), ``tiny`` (a
random network small enough for a CPU test: the same code path at 32 x 32). The workdir that
`jgen.convert` writes records the resolved config of the converted model; the config here must
describe the same architecture (the converter prints the variant to use).
"""

import ml_collections

from jgen.train.config import base_config, parse_arg

ARCHS = ("sd15", "sd21", "tiny")
ARGS = dict(arch=ARCHS)


def load_frozen_from_converted(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Adds the named ``init_from`` loads of a converted run's frozen text encoder and autoencoder
  (into ``frozen/``), reading the work directory that ``init_from.workdir`` names (one
  ``--config.init_from.workdir=`` sets all three loads)."""
  c.init_from.workdir = ml_collections.FieldReference(None, field_type=str)
  for name in ("text_encoder", "autoencoder"):
    c.init_from[name] = ml_collections.ConfigDict()
    c.init_from[name].workdir = c.init_from.get_ref("workdir")
    c.init_from[name].source = "frozen"
    c.init_from[name].subtree = name
    c.init_from[name].into = f"frozen/{name}"
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return config(parse_arg(arg, **ARGS).arch)


def config(variant: str) -> ml_collections.ConfigDict:
  """The config of architecture `variant` (one of `ARCHS`), which the fine-tuning configs extend."""
  c = base_config()
  c.method = "diffusion.stable_diffusion"
  c.seed = 0

  c.data.source = ""              # sampling needs no data; fine-tuning sets an image source
  c.data.image_size = 512
  c.data.channels = 3
  c.data.batch_size = 1

  # The U-Net (jgen.nn.unet.UNet with a transformer at each attention site).
  m = c.model
  m.ch, m.ch_mult, m.num_res_blocks = 320, (1, 2, 4, 4), 2
  m.attn_levels = (0, 1, 2)
  m.dropout = 0.0
  m.num_groups = 32
  m.norm_eps = 1e-5
  m.downsample_padding = 1
  m.flip_sin_to_cos = True
  m.freq_shift = 0.0
  m.context_dim = 768
  m.transformer_heads = (8, 8, 8, 8)
  m.transformer_depth = 1
  m.out_ch = 4

  # The CLIP text encoder (jgen.nn.clip) and its tokenizer (jgen.nn.clip_tokenizer).
  c.text = ml_collections.ConfigDict()
  t = c.text
  t.vocab_size, t.hidden_size, t.intermediate_size = 49408, 768, 3072
  t.num_hidden_layers, t.num_attention_heads = 12, 12
  t.hidden_act = "quick_gelu"
  t.max_length = 77
  t.output_layer = -1             # -1: the last layer (SD 1.x); a 24-layer SD 2.x tower: -2
  t.tokenizer = "open_clip"       # "open_clip" (the wheel's vocabulary) or a tokenizer/ folder
  t.pad_token = "<|endoftext|>"   # SD 1.x; SD 2.x (OpenCLIP) pads with "!"
  t.captions = ""                 # fine-tuning: '|'-separated caption per label ("" = empty)

  # The KL autoencoder (jgen.nn.ldm_autoencoder).
  c.autoencoder = ml_collections.ConfigDict()
  a = c.autoencoder
  a.ch, a.ch_mult, a.num_res_blocks, a.num_groups = 128, (1, 2, 4, 4), 2, 32
  a.latent_channels = 4
  a.scaling_factor = 0.18215

  c.diffusion = ml_collections.ConfigDict()
  d = c.diffusion
  d.schedule = "scaled_linear"
  d.num_timesteps = 1000
  d.beta_start = 0.00085
  d.beta_end = 0.012
  d.prediction = "eps"            # eps (SD 1.x, SD 2.x base 512) | v (SD 2.x 768)
  d.loss_type = "mse"
  d.cond_drop_prob = 0.1          # fine-tuning: P(caption -> empty prompt)

  # Community files applied at sampling (jgen.diffusion.stable_diffusion): a LoRA (peft /
  # diffusers or kohya safetensors) at strength lora.scale, and a textual-inversion embedding
  # (learned_embeds.safetensors / .bin or an A1111 .pt; token: the file's unless given).
  c.lora.file = ""
  c.lora.scale = 1.0
  c.textual_inversion = ml_collections.ConfigDict()
  c.textual_inversion.file = ""
  c.textual_inversion.token = ""
  c.textual_inversion.train_token = ""   # sd_finetune:textual_inversion learns this token
  c.textual_inversion.init_token = ""
  c.textual_inversion.num_vectors = 1

  # A converted model samples with its weights; nothing trains unless a fine-tune says so.
  c.optim.rules = ((".*", "frozen"),)
  c.train.ema_decay = 0.0
  c.train.num_steps = 0

  s = c.sample
  s.prompts = "a photo of an astronaut riding a horse"  # '|' separates several
  s.negative_prompt = ""
  s.guidance_scale = 7.5
  s.sampler = "ddim"              # ddim | dpmpp_2m | euler | heun | ddpm
  s.steps = 50
  s.eta = 0.0
  s.spacing = "trailing"          # ddim: trailing | uniform | quadratic
  s.dpm_spacing = "linspace"
  s.rho = 7.0
  s.num = 4
  s.batch_size = 1

  if variant == "sd21":
    m.context_dim = 1024
    m.transformer_heads = (5, 10, 20, 20)
    t.hidden_size, t.intermediate_size, t.num_attention_heads = 1024, 4096, 16
    t.num_hidden_layers = 23        # diffusers' SD 2.x folders keep 23 of OpenCLIP's 24 layers
    t.hidden_act = "gelu"
    t.pad_token = "!"
    d.prediction = "v"
    c.data.image_size = 768
  elif variant == "tiny":
    m.ch, m.ch_mult, m.num_res_blocks, m.attn_levels = 8, (1, 2), 1, (0, 1)
    m.num_groups, m.context_dim, m.transformer_heads = 4, 16, (2, 2)
    t.vocab_size, t.hidden_size, t.intermediate_size = 49408, 16, 32
    t.num_hidden_layers, t.num_attention_heads = 2, 2
    a.ch, a.ch_mult, a.num_res_blocks, a.num_groups = 8, (1, 2), 1, 4
    c.data.image_size = 32
    s.steps = 3
    s.num = 2
  return c
