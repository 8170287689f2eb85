"""Writes the end-to-end Stable Diffusion fixture: a tiny random diffusers pipeline and its images.

  pip install -e ".[reference]"; pip install --no-deps open_clip_torch
  python benchmarks/sd_pipeline_reference.py

A ``StableDiffusionPipeline`` built from config dicts (no network, no safety checker): an SD
1.5-style U-Net (block_out_channels (8, 16), 2 heads, context 16), an ``AutoencoderKL`` of
widths (8, 16), a 2-layer ``CLIPTextModel`` of width 16, and a byte-level BPE tokenizer in CLIP's
layout whose merges are learned here on a short corpus (`small_vocabulary`: a real BPE
vocabulary, small enough for a fixture). Every weight is redrawn
N(0, 0.1^2); the VAE's ``scaling_factor`` is 0.18215. Saved with ``save_pretrained`` to
``tests/convert/fixtures/sd_pipeline/``; the same weights in the single-file SD 1.x layout
(``model.diffusion_model.*``, ``first_stage_model.*``, ``cond_stage_model.transformer.*``) to
``sd_pipeline_single.safetensors``.

``sd_pipeline.npz``: for two prompts (one with a negative prompt), fixed initial latents
``[2, 4, 4, 4]`` (NCHW) and the pipeline's images (``output_type="np"``, in [0, 1]) after 2 DDIM
steps with guidance 5 on the scheduler jgen's sampler computes: DDIM, ``scaled_linear`` betas,
``timestep_spacing="trailing"`` (t = 999, 499), ``set_alpha_to_one=True`` (the last step lands
on x0), no clipping; plus the token ids of the prompts and the text encoder's output.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

import numpy as np
import torch
from diffusers import (AutoencoderKL, DDIMScheduler, StableDiffusionPipeline,
                       UNet2DConditionModel)
from safetensors.numpy import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from autoencoder_reference import ldm_single_file  # noqa: E402  pylint: disable=C0413
from unet_reference import to_ldm  # noqa: E402  pylint: disable=C0413

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "convert", "fixtures")
PROMPTS = ["a photo of a cat", "an astronaut riding a horse, oil painting"]
NEGATIVE = ["", "blurry"]


CORPUS = ("a photo of a cat an astronaut riding a horse oil painting blurry a dog on the beach "
          "portrait of a woman city at night watercolor landscape mountains river forest")


def small_vocabulary(folder: str) -> int:
  """vocab.json + merges.txt of a small byte-level BPE learned here on CORPUS (CLIP's layout:
  the 256 byte symbols, the same with ``</w>``, one token per merge, the two special tokens;
  no file of CLIP's is used)."""
  from jgen.nn.clip_tokenizer import bytes_to_unicode  # pylint: disable=import-outside-toplevel
  symbols = list(bytes_to_unicode().values())
  words = [list(w[:-1]) + [w[-1] + "</w>"] for w in CORPUS.split()]
  merges = []
  while True:
    counts: dict[tuple[str, str], int] = {}
    for w in words:
      for pair in zip(w, w[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    if not counts:
      break
    best = max(sorted(counts), key=lambda p: counts[p])
    merges.append(best)
    merged = []
    for w in words:
      out, i = [], 0
      while i < len(w):
        if i + 1 < len(w) and (w[i], w[i + 1]) == best:
          out.append(w[i] + w[i + 1])
          i += 2
        else:
          out.append(w[i])
          i += 1
      merged.append(out)
    words = merged
  tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
  tokens += ["<|startoftext|>", "<|endoftext|>"]
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, "vocab.json"), "w") as f:
    json.dump({t: i for i, t in enumerate(tokens)}, f)
  with open(os.path.join(folder, "merges.txt"), "w") as f:
    f.write("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
  return len(tokens)


def pipeline_like_jgen(unet, vae, text, tokenizer) -> StableDiffusionPipeline:
  """A ``StableDiffusionPipeline`` of these models whose DDIM is jgen's: ``scaled_linear``
  betas, trailing timesteps, the last step to x0 (``set_alpha_to_one``), no clipping."""
  scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                            clip_sample=False, set_alpha_to_one=True, steps_offset=0,
                            timestep_spacing="trailing")
  return StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text, tokenizer=tokenizer,
                                 scheduler=scheduler, safety_checker=None,
                                 feature_extractor=None, requires_safety_checker=False)


def main() -> None:
  torch.manual_seed(0)
  tok_dir = tempfile.mkdtemp()
  vocab_size = small_vocabulary(tok_dir)
  tokenizer = CLIPTokenizer(os.path.join(tok_dir, "vocab.json"),
                            os.path.join(tok_dir, "merges.txt"), pad_token="<|endoftext|>",
                            model_max_length=77)
  unet = UNet2DConditionModel(
      sample_size=4, in_channels=4, out_channels=4, block_out_channels=(8, 16),
      layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
      up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
      attention_head_dim=2, norm_num_groups=4)
  vae = AutoencoderKL(block_out_channels=(8, 16), layers_per_block=1, latent_channels=4,
                      norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 2,
                      up_block_types=("UpDecoderBlock2D",) * 2, sample_size=8)
  text = CLIPTextModel(CLIPTextConfig(vocab_size=vocab_size, hidden_size=16,
                                      intermediate_size=32,
                                      num_hidden_layers=2, num_attention_heads=2,
                                      max_position_embeddings=77, hidden_act="quick_gelu",
                                      bos_token_id=vocab_size - 2,
                                      eos_token_id=vocab_size - 1))
  for model in (unet, vae, text):
    model.eval()
    with torch.no_grad():
      for p in model.parameters():
        p.copy_(torch.randn_like(p) * 0.1)
  pipe = pipeline_like_jgen(unet, vae, text, tokenizer)
  folder = os.path.join(OUT, "sd_pipeline")
  pipe.save_pretrained(folder)
  latents = np.random.RandomState(0).randn(2, 4, 4, 4).astype(np.float32)
  with torch.no_grad():
    images = pipe(PROMPTS, negative_prompt=NEGATIVE, num_inference_steps=2, guidance_scale=5.0,
                  latents=torch.from_numpy(latents), output_type="np").images
    ids = tokenizer(PROMPTS + NEGATIVE, padding="max_length", max_length=77,
                    return_tensors="pt").input_ids
    context = text(ids)[0].numpy()
  np.savez(os.path.join(OUT, "sd_pipeline.npz"), latents=latents, images=images,
           ids=ids.numpy(), context=context)
  single = to_ldm({k: v.numpy() for k, v in unet.state_dict().items()}, dict(unet.config))
  single.update({k: v for k, v in ldm_single_file(vae).items()
                 if k.startswith("first_stage_model.")})
  single.update({f"cond_stage_model.transformer.{k}": v.numpy()
                 for k, v in text.state_dict().items()})
  save_file({k: np.ascontiguousarray(v) for k, v in single.items()
             if not k.endswith("position_ids")},
            os.path.join(OUT, "sd_pipeline_single.safetensors"))
  print("wrote", folder, "images", images.shape, "range", images.min(), images.max())


if __name__ == "__main__":
  main()
