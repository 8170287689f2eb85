"""transformers CLIPTextModel -> jgen's CLIPTextModel: outputs equal transformers' (last hidden
state, SD 2.x's penultimate layer, pooled), the single-file layouts (SD 1.x names, OpenCLIP's fused
in_proj) and the inferred config, the full mismatch report; live checks against transformers.

The default tests read fixtures only (written by benchmarks/clip_reference.py; no torch).
Tolerance, float32: the outputs follow a LayerNorm (values of order 1) after 2 layers whose sums
XLA orders differently from torch; they agree to about 1e-6. TOL = 1e-5 leaves 10x room while a
wrong layout (a transposed kernel, a swapped q/k, tanh GELU for erf GELU) is off by 1e-3 or more.
"""

import importlib.util
import json
import pathlib

import jax
import numpy as np
import pytest

from jgen.convert.clip import (clip_text_from_transformers, config_from_state,
                               openclip_to_transformers_names, sd1_clip_names)
from jgen.convert.common import ConversionError
from jgen.convert.files import read_state_dict
from jgen.nn.clip_tokenizer import CLIPTokenizer

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
TOL = 1e-5
ACTS = ("quick_gelu", "gelu")


def _folder(act):
  folder = FIXTURES / f"clip_text_{act}"
  config = json.loads((folder / "config.json").read_text())
  return config, dict(read_state_dict(str(folder / "model.safetensors")))


@pytest.fixture(scope="module")
def ref():
  return dict(np.load(FIXTURES / "clip_text.npz"))


def _max_diff(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - b)))


def _outputs(model, variables, ids):
  apply = jax.jit(model.apply, static_argnames=("output_layer", "return_pooled"))
  last, pooled = apply(variables, ids, return_pooled=True)
  return last, apply(variables, ids, output_layer=-2), pooled


@pytest.mark.parametrize("act", ACTS)
def test_folder_outputs_equal_transformers(ref, act):
  config, state = _folder(act)
  assert "embeddings.token_embedding.weight" in state  # transformers 5: no text_model. level
  model, variables = clip_text_from_transformers(config, state)
  assert model.hidden_act == act and model.eos_token_id == (None if act == "quick_gelu" else 999)
  last, penultimate, pooled = _outputs(model, variables, ref["input_ids"])
  assert _max_diff(last, ref[f"{act}_last_hidden_state"]) < TOL
  assert _max_diff(penultimate, ref[f"{act}_penultimate"]) < TOL
  assert _max_diff(pooled, ref[f"{act}_pooled"]) < TOL
  # transformers 4 (every published diffusers folder) names: text_model. + the buffer.
  old = {"text_model." + k: v for k, v in state.items()}
  old["text_model.embeddings.position_ids"] = np.arange(77)[None]
  _, again = clip_text_from_transformers(config, old)
  jax.tree_util.tree_map(np.testing.assert_array_equal, again, variables)


def test_openclip_single_file_renames_to_the_same_weights(ref):
  config, state = _folder("gelu")
  _, expected = clip_text_from_transformers(config, state)
  single = read_state_dict(str(FIXTURES / "clip_text_openclip.safetensors"))
  view = openclip_to_transformers_names(single)
  inferred = config_from_state(view, head_dim=8)  # hidden 32 / 4 heads (SD: 64-wide heads)
  assert inferred == {**{k: config[k] for k in inferred if k != "eos_token_id"},
                      "eos_token_id": 2}
  model, variables = clip_text_from_transformers(inferred, view)
  jax.tree_util.tree_map(np.testing.assert_array_equal, variables, expected)
  assert config_from_state(single, head_dim=8) == inferred  # the raw OpenCLIP layout
  # diffusers' SD 2.x layout: the last block dropped, the defaults give the penultimate layer.
  short = openclip_to_transformers_names(single, drop_last=1)
  model, variables = clip_text_from_transformers(config_from_state(short, head_dim=8), short)
  assert model.num_hidden_layers == 1
  out = jax.jit(model.apply)(variables, ref["input_ids"])
  assert _max_diff(out, ref["gelu_penultimate"]) < TOL


@pytest.mark.parametrize("level", ["text_model.", ""])
def test_sd1_single_file_names(level):
  config, state = _folder("quick_gelu")
  _, expected = clip_text_from_transformers(config, state)
  prefix = "cond_stage_model.transformer."
  single = {prefix + level + k: v for k, v in state.items()}
  single[prefix + level + "embeddings.position_ids"] = np.arange(77)[None]
  single["model.diffusion_model.out.0.weight"] = np.ones(3, np.float32)  # not the text model
  view = sd1_clip_names(single)
  inferred = config_from_state(view, head_dim=8)
  assert inferred["hidden_act"] == "quick_gelu" and inferred["num_hidden_layers"] == 2
  assert config_from_state(single, head_dim=8) == inferred
  _, variables = clip_text_from_transformers(inferred, view)
  jax.tree_util.tree_map(np.testing.assert_array_equal, variables, expected)
  with pytest.raises(ValueError, match="openclip_to_transformers_names"):
    sd1_clip_names({"cond_stage_model.model.token_embedding.weight": np.zeros((2, 2))})


def test_wrong_architecture_lists_every_name():
  config, state = _folder("quick_gelu")
  broken = {k: v for k, v in state.items() if not k.startswith("encoder.layers.1.mlp.fc2")}
  broken["encoder.layers.0.mlp.fc1.weight"] = np.zeros((40, 32), np.float32)
  broken["encoder.layers.2.layer_norm1.weight"] = np.ones(32, np.float32)
  with pytest.raises(ConversionError) as info:
    clip_text_from_transformers(config, broken)
  err = info.value
  assert err.missing == ["encoder.layers.1.mlp.fc2.weight", "encoder.layers.1.mlp.fc2.bias"]
  assert err.unexpected == ["encoder.layers.2.layer_norm1.weight"]
  assert [(m[0], m[2], m[3]) for m in err.misshaped] == [
      ("encoder.layers.0.mlp.fc1.weight", (32, 40), (32, 37))]
  assert "layers_0/mlp/fc1/kernel" in str(err)
  with pytest.raises(ValueError, match="lacks \\['num_hidden_layers'\\]"):
    clip_text_from_transformers({k: v for k, v in config.items()
                                 if k != "num_hidden_layers"}, state)
  with pytest.raises(ValueError, match="no CLIP text tower"):
    config_from_state({"model.diffusion_model.out.0.weight": np.zeros(3)})
  with pytest.raises(ValueError, match="head_dim"):
    config_from_state(state)  # hidden 32 is not a multiple of SD's 64-wide heads


# ------------------------------------------------------------- live checks (transformers)


def _live():
  pytest.importorskip("torch")
  return pytest.importorskip("transformers")


@pytest.mark.parametrize("act", ACTS)
def test_live_random_model_equals_transformers(act):
  transformers = _live()
  import torch  # pylint: disable=import-outside-toplevel

  torch.manual_seed(1)
  config = transformers.CLIPTextConfig(
      vocab_size=300, hidden_size=48, intermediate_size=64, num_hidden_layers=3,
      num_attention_heads=3, max_position_embeddings=20, hidden_act=act, bos_token_id=298,
      eos_token_id=299 if act == "gelu" else 2)
  torch_model = transformers.CLIPTextModel(config).eval()
  with torch.no_grad():
    for p in torch_model.parameters():
      p.add_(0.05 * torch.randn_like(p))
    ids = torch.randint(0, 298, (2, 20))
    ids[:, 0], ids[0, 6:], ids[1, -1] = 298, 299, 299
    result = torch_model(ids, output_hidden_states=True)
    penultimate = torch_model.final_layer_norm(result.hidden_states[-2]).numpy()
  state = {k: v.numpy() for k, v in torch_model.state_dict().items()}
  model, variables = clip_text_from_transformers(config.to_dict(), state)
  last, ours_penultimate, pooled = _outputs(model, variables, ids.numpy().astype(np.int32))
  assert _max_diff(last, result.last_hidden_state.numpy()) < TOL
  assert _max_diff(ours_penultimate, penultimate) < TOL
  assert _max_diff(pooled, result.pooler_output.numpy()) < TOL


@pytest.mark.skipif(importlib.util.find_spec("open_clip") is None,
                    reason="CLIP's BPE vocabulary ships with open_clip: "
                    "pip install --no-deps open_clip_torch")
def test_live_tokenizer_equals_transformers():
  transformers = _live()
  from jgen.nn.clip_tokenizer import open_clip_vocab  # pylint: disable=import-outside-toplevel

  vocab, merges = open_clip_vocab()
  theirs = transformers.CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)},
                                      merges=list(merges), pad_token="!")
  ours = CLIPTokenizer.from_open_clip(pad_token="!")
  assert theirs.add_tokens(["<cat-toy>", "<Big>"]) == 2
  assert ours.add_tokens(["<cat-toy>", "<Big>"]) == [49408, 49409]
  prompts = ["a photo of <cat-toy>", "a<CAT-TOY>s dog, <big><Big>!", "wow!!! 3x³ Ⅻ",
             "\u00c5ngstr\u00f6m \ufb01 \u2126 \u212b", "<|endoftext|>", "'S 'LL it's"]
  np.testing.assert_array_equal(
      ours(prompts), theirs(prompts, padding="max_length", max_length=77,
                            truncation=True)["input_ids"])
