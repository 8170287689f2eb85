"""Textual-inversion files (diffusers, Automatic1111) -> jgen's CLIP tokenizer and text model.

Fixtures: benchmarks/lora_reference.py (no torch here). diffusers' ``load_textual_inversion``
loaded ``ti_learned_embeds.safetensors`` (``<cat-toy>``, 2 vectors) and ``ti_a1111.pt``
(``name`` ``<cat-toy-a1111>``, 3 vectors) into a tiny CLIP text model; its tokenizer's ids (after
its multi-vector prompt expansion) must equal jgen's, and the text model's output jgen's to
2e-5 (float32; measured about 1e-6 with outputs of order 3: the table rows are copied exactly).
"""

import json
import pathlib

import jax
import numpy as np
import pytest

from jgen.convert import textual_inversion as ti
from jgen.convert.clip import clip_text_from_transformers
from jgen.convert.files import read_state_dict
from jgen.nn.clip_tokenizer import CLIPTokenizer

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
TOL = 2e-5


@pytest.fixture(scope="module")
def ref():
  return dict(np.load(FIXTURES / "textual_inversion.npz"))


def tokenizer():
  vocab = json.loads((FIXTURES / "lora_text" / "tokenizer" / "vocab.json").read_text())
  return CLIPTokenizer(vocab, [], max_length=20)


def text_model():
  config = json.loads((FIXTURES / "lora_text" / "config.json").read_text())
  return clip_text_from_transformers(
      config, read_state_dict(str(FIXTURES / "lora_text" / "model.safetensors")))


def test_read_each_format(ref):
  for name in ("ti_learned_embeds.safetensors", "ti_learned_embeds.bin"):
    got = ti.read_embedding(str(FIXTURES / name))
    assert list(got) == ["<cat-toy>"]
    np.testing.assert_array_equal(got["<cat-toy>"], ref["vectors"])
  got = ti.read_embedding(str(FIXTURES / "ti_a1111.pt"))  # the `name` field, as diffusers
  assert list(got) == ["<cat-toy-a1111>"]
  np.testing.assert_array_equal(got["<cat-toy-a1111>"], ref["a1111"])
  assert list(ti.read_embedding(str(FIXTURES / "ti_a1111.pt"), token="<x>")) == ["<x>"]


def test_matches_diffusers(ref):
  tok = tokenizer()
  module, params = text_model()
  embeddings = {**ti.read_embedding(str(FIXTURES / "ti_learned_embeds.safetensors")),
                **ti.read_embedding(str(FIXTURES / "ti_a1111.pt"))}
  new_params, ids = ti.apply_embedding(params, tok, embeddings)
  assert ids == {"<cat-toy>": [514, 515], "<cat-toy-a1111>": [516, 517, 518]}
  expanded = [ti.expand_prompt(str(p), embeddings) for p in ref["prompts"]]
  assert expanded == [str(p) for p in ref["expanded"]]
  input_ids = tok(expanded)
  np.testing.assert_array_equal(input_ids, ref["input_ids"])
  bigger = module.clone(vocab_size=tok.vocab_size)
  out = np.asarray(jax.jit(bigger.apply)(new_params, input_ids))
  assert np.abs(out - ref["last_hidden_state"]).max() < TOL
  back = ti.embeddings_of(new_params, tok, ["<cat-toy>", "<cat-toy-a1111>"])
  np.testing.assert_array_equal(back["<cat-toy-a1111>"], ref["a1111"])


def test_errors_say_what_to_do(tmp_path):
  tok = tokenizer()
  _, params = text_model()
  with pytest.raises(ValueError, match="already in the tokenizer"):
    ti.apply_embedding(params, tok, {"a</w>": np.zeros((1, 24), np.float32)})
  with pytest.raises(ValueError, match="another text encoder"):
    ti.apply_embedding(params, tok, {"<new>": np.zeros((1, 768), np.float32)})
  save_file = pytest.importorskip("safetensors.numpy").save_file
  path = str(tmp_path / "sdxl.safetensors")
  save_file({"clip_l": np.zeros((1, 768), np.float32), "clip_g": np.zeros((1, 1280), np.float32)},
            path)
  with pytest.raises(ValueError, match="SDXL"):
    ti.read_embedding(path)
  path = str(tmp_path / "my-style.safetensors")  # A1111's own safetensors: the file's stem
  save_file({"emb_params": np.ones((2, 24), np.float32)}, path)
  assert list(ti.read_embedding(path)) == ["my-style"]


def test_export_round_trips(tmp_path, ref):
  pytest.importorskip("safetensors")
  path = str(tmp_path / "learned_embeds.safetensors")
  ti.export_embedding("<cat-toy-a1111>", ref["a1111"], path)
  got = ti.read_embedding(path)
  np.testing.assert_array_equal(got["<cat-toy-a1111>"], ref["a1111"])


def test_diffusers_loads_jgen_export(tmp_path, ref):
  torch = pytest.importorskip("torch")
  loaders = pytest.importorskip("diffusers.loaders")
  transformers = pytest.importorskip("transformers")

  class Loader(loaders.TextualInversionLoaderMixin):
    hf_device_map = None
    components: dict = {}

  vocab = json.loads((FIXTURES / "lora_text" / "tokenizer" / "vocab.json").read_text())
  tok = transformers.CLIPTokenizer(vocab=vocab, merges=[], pad_token="<|endoftext|>")
  encoder = transformers.CLIPTextModel.from_pretrained(str(FIXTURES / "lora_text")).eval()
  loader = Loader()
  for token, vectors in (("<cat-toy>", ref["vectors"]), ("<cat-toy-a1111>", ref["a1111"])):
    path = str(tmp_path / f"{len(vectors)}.safetensors")
    ti.export_embedding(token, vectors, path)
    loader.load_textual_inversion(path, tokenizer=tok, text_encoder=encoder)
  prompts = [loader.maybe_convert_prompt(str(p), tok) for p in ref["prompts"]]
  ids = tok(prompts, padding="max_length", max_length=20, return_tensors="np")["input_ids"]
  np.testing.assert_array_equal(ids, ref["input_ids"])
  with torch.no_grad():
    out = encoder(torch.from_numpy(ids)).last_hidden_state.numpy()
  assert np.abs(out - ref["last_hidden_state"]).max() < TOL
