"""Writes the diffusers autoencoder references that tests/convert/test_autoencoder.py checks.

  pip install -e ".[bench]"     # torch + diffusers; jgen itself never imports them
  python benchmarks/autoencoder_reference.py --out tests/convert/fixtures

Builds two tiny random diffusers models from config dicts (no network): an ``AutoencoderKL``
(block_out_channels (8, 16), one ResNet per level, 4 latent channels, 4 groups) and a
``VQModel`` of the same widths with 16 codes of dimension ``vq_embed_dim = 3`` (not the 4
latent channels, so both of its 1x1 convs change width). Every parameter is perturbed by
N(0, 0.05^2) (so GroupNorm scales and biases are not 1 and 0) and the codebook is set to
encoder outputs of the inputs plus noise (so the inputs use many codes), the draw of 100 whose
nearest codes are least ambiguous. Written to `--out`:

* ``vae_kl/``, ``vq/``: the models' ``save_pretrained`` folders (config.json + safetensors);
* ``vae_kl_ldm.safetensors``: the KL model in the CompVis/LDM single-file layout under
  ``first_stage_model.`` (names inverted from diffusers' own single-file map, attention
  weights as 1x1 convs, plus one U-Net name the VAE reader must skip); checked here to convert
  back to the folder's state dict exactly with diffusers' ``convert_ldm_vae_checkpoint``;
* ``autoencoder.npz``: inputs in [-1, 1] (``x_square`` [2, 16, 16, 3], ``x_wide`` [1, 16, 24, 3],
  NHWC) and, per input, diffusers' outputs in NHWC: KL ``kl_mean``, ``kl_logvar`` (clamped),
  ``kl_decoded`` (decode of the mean); VQ ``vq_h`` (``VQModel.encode(x).latents``),
  ``vq_quantized``, ``vq_indices``, ``vq_decoded`` (``VQModel.decode(h)``, which quantizes), and
  ``vq_margin``, the smallest gap between the nearest and second-nearest code distance (a
  float32 rounding difference cannot flip a code when it is far above 1e-5).
"""

from __future__ import annotations

import argparse
import json
import os
import re

import numpy as np

KL_CONFIG = dict(
    in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
    up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[8, 16], layers_per_block=1,
    latent_channels=4, norm_num_groups=4, sample_size=16)
VQ_CONFIG = dict(
    in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
    up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[8, 16], layers_per_block=1,
    latent_channels=4, vq_embed_dim=3, num_vq_embeddings=16, norm_num_groups=4, sample_size=16)
LDM_PREFIX = "first_stage_model."


def perturb(model, seed: int, scale: float = 0.05) -> None:
  """Adds N(0, scale^2) to every parameter."""
  import torch  # pylint: disable=import-outside-toplevel
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(scale * torch.randn(p.shape, generator=gen))


def nchw(x: np.ndarray):
  import torch  # pylint: disable=import-outside-toplevel
  return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


def nhwc(t) -> np.ndarray:
  return np.transpose(t.detach().numpy(), (0, 2, 3, 1)).astype(np.float32)


def diffusers_to_ldm(name: str, levels: int) -> str:
  """One diffusers VAE name in the CompVis/LDM layout (the inverse of diffusers' map)."""
  rules = (
      (r"(encoder|decoder)\.conv_norm_out\.(.+)", r"\1.norm_out.\2"),
      (r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", r"encoder.down.\1.block.\2.\3"),
      (r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)",
       r"encoder.down.\1.downsample.conv.\2"),
      (r"(encoder|decoder)\.mid_block\.resnets\.0\.(.+)", r"\1.mid.block_1.\2"),
      (r"(encoder|decoder)\.mid_block\.resnets\.1\.(.+)", r"\1.mid.block_2.\2"),
      (r"(encoder|decoder)\.mid_block\.attentions\.0\.group_norm\.(.+)", r"\1.mid.attn_1.norm.\2"),
      (r"(encoder|decoder)\.mid_block\.attentions\.0\.to_(q|k|v)\.(.+)", r"\1.mid.attn_1.\2.\3"),
      (r"(encoder|decoder)\.mid_block\.attentions\.0\.to_out\.0\.(.+)",
       r"\1.mid.attn_1.proj_out.\2"),
  )
  m = re.fullmatch(r"decoder\.up_blocks\.(\d+)\.(resnets|upsamplers)\.(\d+)\.(.+)", name)
  if m:
    level = levels - 1 - int(m.group(1))
    if m.group(2) == "resnets":
      return f"decoder.up.{level}.block.{m.group(3)}.{m.group(4)}".replace(
          "conv_shortcut", "nin_shortcut")
    return f"decoder.up.{level}.upsample.{m.group(4)}"
  for pattern, target in rules:
    if re.fullmatch(pattern, name):
      return re.sub(pattern, target, name).replace("conv_shortcut", "nin_shortcut")
  return name


def ldm_single_file(vae) -> dict:
  """The KL model's weights under LDM names (attention as 1x1 convs), checked by diffusers."""
  import torch  # pylint: disable=import-outside-toplevel
  from diffusers.loaders.single_file_utils import \
      convert_ldm_vae_checkpoint  # pylint: disable=import-outside-toplevel
  levels = len(vae.config.block_out_channels)
  state = vae.state_dict()
  ldm = {}
  for name, w in state.items():
    new = diffusers_to_ldm(name, levels)
    if ".mid.attn_1." in new and w.ndim == 2:
      w = w[:, :, None, None]
    ldm[LDM_PREFIX + new] = w.detach().clone()
  back = convert_ldm_vae_checkpoint(dict(ldm), dict(vae.config))
  if set(back) != set(state) or any(not torch.equal(back[k], state[k]) for k in state):
    raise RuntimeError("the LDM layout does not convert back to the diffusers state dict "
                       f"with diffusers' converter: {sorted(set(back) ^ set(state))[:10]}")
  out = {k: v.numpy().astype(np.float32) for k, v in ldm.items()}
  out["model.diffusion_model.out.2.bias"] = np.zeros((3,), np.float32)  # not the VAE
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default="tests/convert/fixtures")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()

  import torch  # pylint: disable=import-outside-toplevel
  from diffusers import AutoencoderKL, VQModel  # pylint: disable=import-outside-toplevel
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel

  torch.manual_seed(args.seed)
  rng = np.random.default_rng(args.seed)
  inputs = {"x_square": rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32),
            "x_wide": rng.uniform(-1, 1, (1, 16, 24, 3)).astype(np.float32)}
  out = dict(inputs)

  vae = AutoencoderKL(**KL_CONFIG).eval()
  perturb(vae, args.seed + 1)
  vq = VQModel(**VQ_CONFIG).eval()
  perturb(vq, args.seed + 2)
  with torch.no_grad():
    hs = [vq.encode(nchw(x)).latents for x in inputs.values()]
    flat = torch.cat([h.permute(0, 2, 3, 1).reshape(-1, h.shape[1]) for h in hs])
    best = (-1.0, None)
    for _ in range(100):  # the codebook whose nearest codes are least ambiguous
      pick = torch.from_numpy(rng.choice(flat.shape[0], VQ_CONFIG["num_vq_embeddings"],
                                         replace=False))
      codes = flat[pick] + 0.05 * torch.randn(len(pick), flat.shape[1])
      d = torch.cdist(flat, codes).sort(dim=1).values
      margin = float((d[:, 1] - d[:, 0]).min())
      best = max(best, (margin, codes), key=lambda b: b[0])
    vq.quantize.embedding.weight.copy_(best[1])

    margins = []
    for key, x in inputs.items():
      tag = key[2:]
      dist = vae.encode(nchw(x)).latent_dist
      out[f"kl_mean_{tag}"] = nhwc(dist.mean)
      out[f"kl_logvar_{tag}"] = nhwc(dist.logvar)
      out[f"kl_decoded_{tag}"] = nhwc(vae.decode(dist.mean).sample)
      h = vq.encode(nchw(x)).latents
      quant, _, (_, _, indices) = vq.quantize(h)
      out[f"vq_h_{tag}"] = nhwc(h)
      out[f"vq_quantized_{tag}"] = nhwc(quant)
      out[f"vq_indices_{tag}"] = indices.reshape(h.shape[0], h.shape[2], h.shape[3]).numpy()
      out[f"vq_decoded_{tag}"] = nhwc(vq.decode(h).sample)
      d = torch.cdist(h.permute(0, 2, 3, 1).reshape(-1, h.shape[1]),
                      vq.quantize.embedding.weight).sort(dim=1).values
      margins.append(float((d[:, 1] - d[:, 0]).min()))
  out["vq_margin"] = np.float32(min(margins))

  os.makedirs(args.out, exist_ok=True)
  vae.save_pretrained(os.path.join(args.out, "vae_kl"))
  vq.save_pretrained(os.path.join(args.out, "vq"))
  save_file(ldm_single_file(vae), os.path.join(args.out, "vae_kl_ldm.safetensors"))
  np.savez_compressed(os.path.join(args.out, "autoencoder.npz"), **out)
  used = len(np.unique(np.concatenate([out[k].ravel() for k in out if k.startswith("vq_ind")])))
  print(json.dumps({"out": args.out, "vq_codes_used": used, "vq_margin": float(out["vq_margin"]),
                    "kl_mean_abs": float(np.abs(out["kl_mean_square"]).mean())}))
  for root, _, files in os.walk(args.out):
    for f in sorted(files):
      path = os.path.join(root, f)
      print(f"{os.path.getsize(path):8d}  {path}")


if __name__ == "__main__":
  main()
