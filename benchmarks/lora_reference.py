"""Writes the LoRA and textual-inversion fixtures that tests/convert/test_lora.py and
tests/convert/test_textual_inversion.py check, with diffusers as the oracle.

  pip install -e ".[bench]" diffusers transformers peft safetensors   # jgen never imports them
  python benchmarks/lora_reference.py --out tests/convert/fixtures

Writes, under --out:
* ``lora_unet/config.json`` and ``lora_unet/shapes.json``: a tiny SD 1.x-style diffusers
  ``UNet2DConditionModel`` (block_out_channels (32, 64), one layer per block, cross-attention
  width 24, 4 heads, 8 groups). Its 790k weights (3 MB) are not stored: each tensor is
  ``0.2 * np.random.default_rng(zlib.crc32(name)).standard_normal(shape)`` in float32
  (`seeded_weights`), which the tests rebuild from ``shapes.json`` without torch.
* ``lora_text/``: a tiny transformers ``CLIPTextModel`` (width 24, 2 layers, a 514-token
  byte-level vocabulary with no merges) with its ``tokenizer/`` (vocab.json, merges.txt).
* ``lora_peft.safetensors``: a random peft LoRA (U-Net: r 4, alpha 8, targets to_q, to_k, to_v,
  to_out.0, proj_in, ff.net.2; text encoder: r 4, alpha 8, q/k/v/out_proj and fc1 with
  ``rank_pattern={"fc1": 2}``, ``alpha_pattern={"fc1": 3}``; every B nonzero) as
  ``StableDiffusionPipeline.save_lora_weights`` writes it (``lora_adapter_metadata`` in the
  header). ``lora_kohya.safetensors``: the same weights under kohya names with a per-module
  ``.alpha``. ``lora_locon_kohya.safetensors``: a kohya LoCon (r 2, alpha 1) on every ResNet
  ``conv1``/``conv2``/``conv_shortcut``, ``time_emb_proj`` and the resamplers' ``conv``.
* ``lora.npz``: the inputs (``x`` NCHW, ``t``, ``context``, ``input_ids``) and diffusers'
  outputs: the U-Net without LoRA, after loading each file through
  ``StableDiffusionPipeline.lora_state_dict`` + ``load_lora_into_unet`` (the conversion
  ``load_lora_weights`` runs, kohya names included), at ``lora_scale`` 0.5, after ``fuse_lora``;
  the text model's last hidden state without and with each file.
* ``ti_learned_embeds.safetensors`` / ``ti_learned_embeds.bin`` (diffusers, token
  ``<cat-toy>``, 2 vectors), ``ti_a1111.pt`` (A1111, ``name`` "cat-toy-a1111", 3 vectors) and
  ``textual_inversion.npz``: prompts, the ids diffusers' tokenizer gives after
  ``load_textual_inversion`` (with its multi-vector prompt expansion) and the text model's output.
"""

# pylint: disable=import-outside-toplevel  (torch, diffusers, peft: reference packages only)
from __future__ import annotations

import argparse
import json
import os
import zlib

import numpy as np

UNET = dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
            layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=24,
            attention_head_dim=4, norm_num_groups=8)
TEXT = dict(vocab_size=514, hidden_size=24, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=77, bos_token_id=512,
            eos_token_id=513, pad_token_id=513)
UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "ff.net.2"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1"]
LOCON_TARGETS = ["conv1", "conv2", "conv_shortcut", "time_emb_proj", "downsamplers.0.conv",
                 "upsamplers.0.conv"]
PROMPTS = ["a photo of <cat-toy>", "<cat-toy-a1111> on a beach, <cat-toy>", "plain text"]


def seeded_weights(shapes: dict) -> dict:
  """The fixture U-Net's weights: 0.2 N(0, 1), seeded by each tensor's name."""
  return {name: (0.2 * np.random.default_rng(zlib.crc32(name.encode())).standard_normal(shape)
                 ).astype(np.float32) for name, shape in shapes.items()}


def _unet(shapes):
  import torch
  from diffusers import UNet2DConditionModel

  model = UNet2DConditionModel(**UNET).eval()
  state = {k: torch.from_numpy(v) for k, v in seeded_weights(shapes).items()}
  model.load_state_dict(state, strict=True)
  return model


def _tokenizer_files(folder):
  from jgen.nn.clip_tokenizer import bytes_to_unicode

  symbols = list(bytes_to_unicode().values())
  vocab = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
    json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
  with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
    f.write("#version: 0.2\n")


def _random_lora(model, config, seed):
  import torch
  from peft import get_peft_model_state_dict, inject_adapter_in_model

  inject_adapter_in_model(config, model)
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "lora_" in name:
        p.copy_(0.3 * torch.randn(p.shape, generator=gen))
  state = get_peft_model_state_dict(model)
  return {k: v.detach().clone() for k, v in state.items()}, config.to_dict()


def _kohya(states, alphas):
  """peft names -> kohya: lora_unet_/lora_te_ + the module with '_', lora_down/up, .alpha."""
  import torch

  out = {}
  for prefix, state in states.items():
    for key, value in state.items():
      module, kind = key.rsplit(".lora_", 1)
      stem = prefix + module.replace(".", "_")
      out[stem + (".lora_down.weight" if kind.startswith("A") else ".lora_up.weight")] = value
      if kind.startswith("A"):
        out[stem + ".alpha"] = torch.tensor(float(alphas(module)))
  return out


def _alpha_of(config):
  from peft.utils.other import get_pattern_key

  def alpha(module):
    key = get_pattern_key(list((config.get("alpha_pattern") or {}).keys()), module)
    return (config.get("alpha_pattern") or {}).get(key, config["lora_alpha"])
  return alpha


def main():  # pylint: disable=too-many-locals,too-many-statements
  import torch
  from diffusers import StableDiffusionPipeline, UNet2DConditionModel
  from diffusers.loaders import TextualInversionLoaderMixin
  from peft import LoraConfig
  from safetensors.torch import save_file
  from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default="tests/convert/fixtures")
  out = parser.parse_args().out
  torch.manual_seed(0)
  folder = os.path.join(out, "lora_unet")
  os.makedirs(folder, exist_ok=True)
  base = UNet2DConditionModel(**UNET)
  base.save_config(folder)
  shapes = {k: list(v.shape) for k, v in base.state_dict().items()}
  with open(os.path.join(folder, "shapes.json"), "w", encoding="utf-8") as f:
    json.dump(shapes, f)

  text_folder = os.path.join(out, "lora_text")
  torch.manual_seed(1)
  text = CLIPTextModel(CLIPTextConfig(**TEXT)).eval()
  with torch.no_grad():
    for p in text.parameters():
      p.add_(0.05 * torch.randn_like(p))
  text.save_pretrained(text_folder)
  _tokenizer_files(os.path.join(text_folder, "tokenizer"))

  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
  t = np.array([10, 700], np.int64)
  context = rng.standard_normal((2, 7, 24)).astype(np.float32)
  ids = rng.integers(0, 512, (2, 16))
  ids[:, 0], ids[:, -1] = 512, 513
  arrays = {"x": x, "t": t, "context": context, "input_ids": ids.astype(np.int32)}

  def run_unet(model, **kw):
    with torch.no_grad():
      return model(torch.from_numpy(x), torch.from_numpy(t),
                   encoder_hidden_states=torch.from_numpy(context), **kw).sample.numpy()

  def run_text(model):
    with torch.no_grad():
      return model(torch.from_numpy(ids)).last_hidden_state.numpy()

  arrays["unet_base"] = run_unet(_unet(shapes))
  arrays["text_base"] = run_text(text)

  # --- the LoRA: random peft adapters, saved as diffusers and kohya files ---
  unet = _unet(shapes)
  unet_state, unet_config = _random_lora(unet, LoraConfig(
      r=4, lora_alpha=8, target_modules=UNET_TARGETS, init_lora_weights=True), 2)
  text_lora = CLIPTextModel.from_pretrained(text_folder).eval()
  text_state, text_config = _random_lora(text_lora, LoraConfig(
      r=4, lora_alpha=8, target_modules=TEXT_TARGETS, rank_pattern={"fc1": 2},
      alpha_pattern={"fc1": 3}), 3)
  arrays["unet_lora_peft_model"] = run_unet(unet)  # the adapters as trained, for the record
  peft_path = os.path.join(out, "lora_peft.safetensors")
  StableDiffusionPipeline.save_lora_weights(
      out, unet_lora_layers=unet_state, text_encoder_lora_layers=text_state,
      unet_lora_adapter_metadata=unet_config, text_encoder_lora_adapter_metadata=text_config,
      weight_name="lora_peft.safetensors")
  kohya_path = os.path.join(out, "lora_kohya.safetensors")
  save_file(_kohya({"lora_unet_": unet_state}, _alpha_of(unet_config))
            | _kohya({"lora_te_": text_state}, _alpha_of(text_config)), kohya_path)

  locon = _unet(shapes)
  locon_state, locon_config = _random_lora(locon, LoraConfig(
      r=2, lora_alpha=1, target_modules=LOCON_TARGETS), 4)
  locon_path = os.path.join(out, "lora_locon_kohya.safetensors")
  save_file(_kohya({"lora_unet_": locon_state}, _alpha_of(locon_config)), locon_path)

  # --- diffusers loads each file, as pipe.load_lora_weights does ---
  for tag, path in (("peft", peft_path), ("kohya", kohya_path), ("locon", locon_path)):
    state, alphas, metadata = StableDiffusionPipeline.lora_state_dict(
        path, return_lora_metadata=True)
    model = _unet(shapes)
    StableDiffusionPipeline.load_lora_into_unet(
        {k: v for k, v in state.items() if k.startswith("unet.")}, alphas, unet=model,
        adapter_name=tag, metadata=metadata)
    arrays[f"unet_{tag}"] = run_unet(model)
    if tag == "peft":
      arrays["unet_peft_scale_0.5"] = run_unet(model, cross_attention_kwargs={"scale": 0.5})
      model.fuse_lora(lora_scale=1.0)
      model.unload_lora()
      arrays["unet_peft_fused"] = run_unet(model)
    if tag != "locon":
      encoder = CLIPTextModel.from_pretrained(text_folder).eval()
      StableDiffusionPipeline.load_lora_into_text_encoder(
          state, alphas, encoder, prefix="text_encoder", adapter_name=tag, metadata=metadata)
      arrays[f"text_{tag}"] = run_text(encoder)
  np.savez_compressed(os.path.join(out, "lora.npz"), **arrays)

  # --- textual inversion: diffusers' files, A1111's .pt, diffusers loading them ---
  vectors = (0.5 * np.random.default_rng(5).standard_normal((2, 24))).astype(np.float32)
  a1111 = (0.5 * np.random.default_rng(6).standard_normal((3, 24))).astype(np.float32)
  save_file({"<cat-toy>": torch.from_numpy(vectors)},
            os.path.join(out, "ti_learned_embeds.safetensors"))
  torch.save({"<cat-toy>": torch.from_numpy(vectors)}, os.path.join(out, "ti_learned_embeds.bin"))
  torch.save({"string_to_token": {"*": 265},
              "string_to_param": {"*": torch.nn.Parameter(torch.from_numpy(a1111))},
              "name": "<cat-toy-a1111>", "step": 1500, "sd_checkpoint": "0123abcd",
              "sd_checkpoint_name": "tiny"}, os.path.join(out, "ti_a1111.pt"))

  class _Loader(TextualInversionLoaderMixin):
    hf_device_map = None
    components: dict = {}

  with open(os.path.join(text_folder, "tokenizer", "vocab.json"), encoding="utf-8") as f:
    vocab = json.load(f)
  tokenizer = CLIPTokenizer(vocab=vocab, merges=[], pad_token="<|endoftext|>")
  encoder = CLIPTextModel.from_pretrained(text_folder).eval()
  loader = _Loader()
  loader.load_textual_inversion(os.path.join(out, "ti_learned_embeds.safetensors"),
                                tokenizer=tokenizer, text_encoder=encoder)
  loader.load_textual_inversion(os.path.join(out, "ti_a1111.pt"), tokenizer=tokenizer,
                                text_encoder=encoder)
  prompts = [loader.maybe_convert_prompt(p, tokenizer) for p in PROMPTS]
  ti_ids = tokenizer(prompts, padding="max_length", max_length=20, truncation=True,
                     return_tensors="np")["input_ids"]
  with torch.no_grad():
    ti_out = encoder(torch.from_numpy(ti_ids)).last_hidden_state.numpy()
  np.savez_compressed(os.path.join(out, "textual_inversion.npz"), prompts=np.array(PROMPTS),
                      expanded=np.array(prompts), input_ids=ti_ids.astype(np.int32),
                      last_hidden_state=ti_out, vectors=vectors, a1111=a1111)

  names = ["lora_unet", "lora_text", "lora.npz", "lora_peft.safetensors",
           "lora_kohya.safetensors", "lora_locon_kohya.safetensors", "textual_inversion.npz",
           "ti_learned_embeds.safetensors", "ti_learned_embeds.bin", "ti_a1111.pt"]
  total = 0
  for name in names:
    path = os.path.join(out, name)
    files = ([os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs]
             if os.path.isdir(path) else [path])
    for file in files:
      os.chmod(file, 0o644)
      total += os.path.getsize(file)
  print(f"wrote the LoRA / textual-inversion fixtures under {out} ({total / 1e6:.2f} MB)")
  for key in ("unet_peft", "unet_kohya", "unet_locon", "unet_peft_fused", "text_peft",
              "text_kohya"):
    base = arrays["text_base" if key.startswith("text") else "unet_base"]
    print(f"  {key}: max|out - base| {np.abs(arrays[key] - base).max():.3g}")
  print(f"  peft vs kohya (U-Net): {np.abs(arrays['unet_peft'] - arrays['unet_kohya']).max():.3g}")


if __name__ == "__main__":
  main()
