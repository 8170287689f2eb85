"""Fine-tuning a converted Stable Diffusion on captioned images (`diffusion.stable_diffusion`).

  python -m jgen.convert path/to/stable-diffusion-v1-5 /tmp/sd15
  python launch.py --config experiments/sd/finetune.py --workdir /tmp/sd15_lora \
      --config.init_from.workdir=/tmp/sd15 --config.data.source=captioned:/path/to/images
  python launch.py --config experiments/sd/finetune.py --workdir /tmp/sd15_lora --mode=sample \
      --config.sample.prompts="a photo of sks dog on the beach"
  python -m jgen.export /tmp/sd15_lora lora.safetensors --what=lora-peft   # for diffusers

The images: a folder with a ``.txt`` caption beside each image or a ``metadata.jsonl``
(`jgen.data.captions`), resized to ``data.image_size``. The U-Net, text encoder and
autoencoder come from the converted work directory (``init_from``: ``params/unet``, and the
frozen text encoder and autoencoder); the text encoder and autoencoder stay frozen.

Variants (``experiments/sd/finetune.py:kind=KIND,arch=ARCH``; ``arch`` ``sd21`` / ``tiny`` picks
the architecture as in sd/txt2img, e.g. ``kind=lora,arch=sd21``), the kinds:
* ``lora`` (default): rank-4 LoRA of every attention projection (diffusers' train_text_to_image
  _lora targets: to_q, to_k, to_v, to_out), lr 1e-4, adapters only;
* ``full``: every U-Net weight, lr 1e-5;
* ``dreambooth``: full fine-tuning on a subject with prior preservation (Ruiz et al. 2023):
  draw class images with the base (``--mode=sample`` of the converted run,
  ``--config.sample.prompts="a photo of a dog" --config.sample.num=200``), then make the folder
  with ``python -m jgen.data.captions SUBJECT_DIR WORKDIR/samples/<tag>.npz OUT
  --instance_prompt="a photo of sks dog" --class_prompt="a photo of a dog"`` (the subject
  repeated so that it and the prior are drawn equally often); lr 5e-6, 800 steps.
  ``dreambooth_lora`` is the same with LoRA (lr 1e-4).
* ``textual_inversion``: a new token's embedding (``textual_inversion.train_token``, starting
  from ``init_token``) learned from a plain image folder (``--config.data.source=folder:DIR``)
  with template captions ("a photo of a {}", ...), lr 5e-3, 2,000 steps; everything else
  frozen. ``python -m jgen.export WORKDIR learned_embeds.safetensors --what=embedding``.
* ``perfusion``: Perfusion (Tewel et al. 2023, `jgen.diffusion.sd_perfusion`): the token
  ``textual_inversion.train_token`` starting from its superordinate word ``init_token`` (a
  plain image folder, the same template captions) and one value offset per cross-attention
  layer, the keys locked to the superordinate's; lr 5e-3, 400 steps; the gate
  ``perfusion.train_bias`` / ``train_temperature`` (0.75 / 0.1) in training, ``perfusion.bias``
  / ``temperature`` (0.7 / 0.15) at sampling. The concept file:
  ``python -m jgen.cli.perfusion export --run WORKDIR --out concept.safetensors``; sample one or
  several files with ``--mode=sample --config.perfusion.concepts="a.safetensors|b.safetensors"``
  in any Perfusion run of the same base.
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("txt2img", beside=__file__)
KINDS = ("lora", "full", "dreambooth", "dreambooth_lora", "textual_inversion", "perfusion")
# Textual inversion's captions (the templates of Gal et al. 2023 / diffusers' example); "{}"
# stands for the trained token.
TI_TEMPLATES = ("a photo of a {}|a rendering of a {}|a cropped photo of the {}|the photo of a {}|"
                "a photo of a clean {}|a close-up photo of a {}|a bright photo of the {}|"
                "a good photo of a {}")
ARGS = dict(kind=KINDS, arch=_base.ARCHS)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  kind, arch = a.kind, a.arch
  c = _base.config(arch)

  c.data.source = "captioned:/path/to/images"  # set --config.data.source=captioned:DIR
  c.data.resize = True
  c.data.random_flip = kind in ("lora", "full")
  c.data.batch_size = 1 if c.data.image_size >= 512 else 8
  c.text.captions = ""            # the folder's captions

  # The converted model: the U-Net into params, text encoder and autoencoder frozen.
  _base.load_frozen_from_converted(c)
  c.init_from.source = "params"
  c.init_from.subtree = "unet"
  c.init_from.into = "params/unet"

  c.optim.rules = ()
  c.optim.schedule = "constant"
  c.optim.warmup_steps = 0
  c.optim.grad_clip_norm = 1.0
  c.train.ema_decay = 0.0
  c.train.num_steps = 800 if kind.startswith("dreambooth") else 1000
  c.train.checkpoint_every = 200
  c.train.log_every = 10
  c.train.eval_every = 0
  c.diffusion.cond_drop_prob = 0.0 if kind.startswith("dreambooth") else 0.1
  if kind in ("textual_inversion", "perfusion"):
    c.data.source = "folder:/path/to/images"
    c.text.captions = TI_TEMPLATES
    c.textual_inversion.train_token = "<my-token>"
    c.textual_inversion.init_token = "toy"
    c.textual_inversion.num_vectors = 1
    c.optim.rules = (("token_offsets", 1.0), (".*", "frozen"))
    c.optim.lr = 5e-3
    c.train.num_steps = 2000
    c.diffusion.cond_drop_prob = 0.0
    if kind == "perfusion":
      c.method = "diffusion.sd_perfusion"
      c.textual_inversion.init_token = "dog"   # the superordinate: the key lock's word
      c.optim.rules = (("token_offsets", 1.0), ("perfusion/.*", 1.0), (".*", "frozen"))
      c.train.num_steps = 400
      c.perfusion = ml_collections.ConfigDict()
      c.perfusion.train_bias = 0.75       # the gate in training (the paper's beta, tau)
      c.perfusion.train_temperature = 0.1
      c.perfusion.bias = 0.7              # the gate at sampling
      c.perfusion.temperature = 0.15
      c.perfusion.corpus_size = 32 if arch == "tiny" else 500  # random prompts in C's corpus
      c.perfusion.concepts = ""           # sampling: '|'-separated concept files
  elif kind.endswith("lora"):
    c.lora.rank = 4
    c.lora.alpha = 4.0
    c.lora.targets = r"attn[12]/to_(q|k|v|out)$"
    c.lora.init = "kaiming"
    c.optim.lr = 1e-4
  else:
    c.optim.lr = 5e-6 if kind == "dreambooth" else 1e-5
  c.sample.num = 4
  if arch == "tiny":
    c.train.num_steps = 4
    c.train.checkpoint_every = 4
    c.train.log_every = 2
    c.data.batch_size = 2
    c.sample.steps = 2
  return c
