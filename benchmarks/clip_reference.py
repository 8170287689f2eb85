"""Writes the transformers CLIP fixtures that tests/convert/test_clip.py and tests/nn/test_clip.py
check (the text encoder and the tokenizer of Stable Diffusion).

  pip install -e ".[bench]" transformers safetensors   # jgen itself never imports them
  pip install --no-deps open_clip_torch                # only its BPE vocabulary file is read
  python benchmarks/clip_reference.py --out tests/convert/fixtures

Writes, under --out:
* ``clip_text_quick_gelu/``, ``clip_text_gelu/``: tiny random transformers ``CLIPTextModel``s
  (hidden 32, 2 layers, 4 heads, intermediate 37, vocab 1000; ``quick_gelu`` with the legacy
  ``eos_token_id=2`` (pooled at the argmax of the ids) and ``gelu`` with ``eos_token_id=999``
  (pooled at the first 999)), saved by ``save_pretrained`` (config.json + model.safetensors).
* ``clip_text.npz``: ``input_ids`` [3, 77] (bos 998, eos 999; rows padded with eos as SD 1.x,
  with 0 as SD 2.x, and one full row) and per model (``quick_gelu_*``, ``gelu_*``):
  ``last_hidden_state``, ``penultimate`` = ``final_layer_norm(hidden_states[-2])`` (SD 2.x's
  context, diffusers' ``clip_skip=1``), ``pooled``.
* ``clip_text_openclip.safetensors``: the gelu model's weights in an SD 2.x single file's
  OpenCLIP layout under ``cond_stage_model.model.`` (fused ``attn.in_proj_weight``), plus a
  ``text_projection`` and ``logit_scale`` that the converter must leave alone.
* ``clip_tokenizer.json``: ~30 prompts and transformers' ``CLIPTokenizer`` ids (padded to 77,
  truncated) built from open_clip's BPE file, for both pad tokens (``<|endoftext|>``, ``!``).
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

TINY = dict(vocab_size=1000, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=77, bos_token_id=998,
            pad_token_id=1)
VARIANTS = {"quick_gelu": dict(hidden_act="quick_gelu", eos_token_id=2),
            "gelu": dict(hidden_act="gelu", eos_token_id=999)}
BOS_ID, EOS_ID = 998, 999

PROMPTS = [
    "", "a photo of a cat", "A Photo Of A CAT",
    "an astronaut riding a horse on mars, 4k, trending",
    "Hello, World!!! It's 2024; don't stop...", "wow!! amazing!!!",
    "rock'n'roll 'quoted' 're", "café naïve résumé Ångström", "e\u0301 decomposed accent",
    "東京の夜景、寿司と富士山", "한국어 텍스트", "🐱🐶 emoji 👍🏽 family 👨‍👩‍👧", "ΟΔΟΣ Σίσυφος",
    "İstanbul straße ß", "x² ½ ⅔ ١٢٣ 12345 3.14159", "tab\tnew\nline  multiple   spaces",
    "  leading and trailing  ", "price: $3.50 (50% off) #tag @user a&b <html> &amp;",
    "<|endoftext|> inside <|startoftext|>", "<|ENDOFTEXT|> upper",
    "zero\u200bwidth nbsp\xa0here",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "masterpiece, best quality, (ultra-detailed:1.2), [cat|dog], {fantasy}",
    "a " * 100, " ".join(f"word{i}" for i in range(80)),
    "A very long prompt " + "with many, many descriptive words " * 12,
    "Привет мир", "مرحبا بالعالم", "नमस्ते दुनिया", "😀" * 90,
]


def text_models(out: str) -> dict:
  import torch  # pylint: disable=import-outside-toplevel
  from transformers import CLIPTextConfig, CLIPTextModel  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(0)
  ids = np.zeros((3, 77), np.int64)
  lengths = (9, 20, 75)
  for row, n in enumerate(lengths):
    ids[row, 0] = BOS_ID
    ids[row, 1:n + 1] = rng.integers(1, 998, n)
    ids[row, n + 1] = EOS_ID
  ids[0, lengths[0] + 2:] = EOS_ID  # SD 1.x pads with <|endoftext|>; row 1 keeps 0 (SD 2.x)
  arrays = {"input_ids": ids.astype(np.int32)}
  models = {}
  for name, extra in VARIANTS.items():
    torch.manual_seed(len(name))
    model = CLIPTextModel(CLIPTextConfig(**TINY, **extra)).eval()
    with torch.no_grad():  # larger than the 0.02 init, so layer norms and GELUs matter
      for p in model.parameters():
        p.add_(0.05 * torch.randn_like(p))
      result = model(torch.from_numpy(ids), output_hidden_states=True)
      penultimate = model.final_layer_norm(result.hidden_states[-2])
    model.save_pretrained(os.path.join(out, f"clip_text_{name}"))
    arrays[f"{name}_last_hidden_state"] = result.last_hidden_state.numpy()
    arrays[f"{name}_penultimate"] = penultimate.numpy()
    arrays[f"{name}_pooled"] = result.pooler_output.numpy()
    models[name] = model
  np.savez_compressed(os.path.join(out, "clip_text.npz"), **arrays)
  return models


def openclip_file(model, path: str) -> None:
  """The transformers weights in OpenCLIP's single-file layout (the inverse renaming)."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel

  sd = {k.removeprefix("text_model."): v.numpy() for k, v in model.state_dict().items()}
  pre = "cond_stage_model.model."
  out = {pre + "token_embedding.weight": sd["embeddings.token_embedding.weight"],
         pre + "positional_embedding": sd["embeddings.position_embedding.weight"],
         pre + "ln_final.weight": sd["final_layer_norm.weight"],
         pre + "ln_final.bias": sd["final_layer_norm.bias"],
         pre + "text_projection": np.full((32, 16), 0.5, np.float32),
         pre + "logit_scale": np.array(4.6, np.float32)}
  for i in range(TINY["num_hidden_layers"]):
    src, dst = f"encoder.layers.{i}.", f"{pre}transformer.resblocks.{i}."
    for kind in ("weight", "bias"):
      out[f"{dst}attn.in_proj_{kind}"] = np.concatenate(
          [sd[f"{src}self_attn.{p}.{kind}"] for p in ("q_proj", "k_proj", "v_proj")])
      for new, old in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"),
                       ("ln_2", "layer_norm2"), ("mlp.c_fc", "mlp.fc1"),
                       ("mlp.c_proj", "mlp.fc2")):
        out[f"{dst}{new}.{kind}"] = sd[f"{src}{old}.{kind}"]
  save_file({k: np.ascontiguousarray(v) for k, v in out.items()}, path)


def tokenizer_fixture(path: str) -> None:
  from transformers import CLIPTokenizer  # pylint: disable=import-outside-toplevel

  from jgen.nn.clip_tokenizer import open_clip_vocab  # pylint: disable=import-outside-toplevel

  vocab, merges = open_clip_vocab()
  result = {"prompts": PROMPTS}
  for key, pad in (("ids_pad_eos", "<|endoftext|>"), ("ids_pad_bang", "!")):
    tok = CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=list(merges),
                        pad_token=pad)
    result[key] = tok(PROMPTS, padding="max_length", max_length=77,
                      truncation=True)["input_ids"]
  with open(path, "w", encoding="utf-8") as f:
    json.dump(result, f, ensure_ascii=False, separators=(",", ":"))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default="tests/convert/fixtures")
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  models = text_models(args.out)
  openclip_file(models["gelu"], os.path.join(args.out, "clip_text_openclip.safetensors"))
  tokenizer_fixture(os.path.join(args.out, "clip_tokenizer.json"))
  for folder, _, files in os.walk(args.out):  # safetensors writes 0600; the repo wants 0644
    for name in files:
      if "clip" in os.path.join(folder, name):
        os.chmod(os.path.join(folder, name), 0o644)
  total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(args.out) for f in fs
              if "clip" in os.path.join(d, f))
  print(f"wrote the CLIP fixtures under {args.out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
  main()
