"""Community LoRA files -> jgen's converted SD U-Net and CLIP text model, and back out.

The default tests read fixtures only (benchmarks/lora_reference.py; no torch): diffusers'
outputs after it loaded each file (``load_lora_weights``' conversion: peft names with the
header's alpha, kohya names with per-module ``.alpha``, a kohya LoCon on convolutions). The
fixture U-Net's weights are rebuilt from ``lora_unet/shapes.json`` by their seeded rule.

Tolerances, float32: the converted U-Net alone matches diffusers to about 1e-6 (outputs of
order 1) and so does it with every LoRA merged (measured 9.5e-7 for peft, kohya and LoCon;
the CLIP text model 5.5e-6 with its LoRA, outputs of order 3): 2e-5 on both leaves room for
another CPU's kernels, while a transposed or unscaled update moves the outputs by 0.6 or more
(`test_tolerances_are_meaningful`). Weights from two files or a round trip agree to 1e-6.
"""

import json
import pathlib
import zlib

import jax
import numpy as np
import pytest

from jgen.convert import lora as lora_lib
from jgen.convert import lora_export
from jgen.convert.clip import clip_text_from_transformers
from jgen.convert.common import flatten_tree
from jgen.convert.files import read_state_dict
from jgen.convert.unet import unet_from_diffusers
from jgen.nn.lora import Lora

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
OUT_TOL, WEIGHT_TOL = 2e-5, 1e-6
FILES = {"peft": "lora_peft.safetensors", "kohya": "lora_kohya.safetensors",
         "locon": "lora_locon_kohya.safetensors"}


def seeded_weights(shapes):
  """benchmarks/lora_reference.py's rule for the fixture U-Net's weights."""
  return {name: (0.2 * np.random.default_rng(zlib.crc32(name.encode())).standard_normal(shape)
                 ).astype(np.float32) for name, shape in shapes.items()}


@pytest.fixture(scope="module")
def ref():
  return dict(np.load(FIXTURES / "lora.npz"))


@pytest.fixture(scope="module")
def unet():
  config = json.loads((FIXTURES / "lora_unet" / "config.json").read_text())
  shapes = json.loads((FIXTURES / "lora_unet" / "shapes.json").read_text())
  module, variables = unet_from_diffusers(config, seeded_weights(shapes))
  apply = jax.jit(lambda v, x, t, c: module.apply(v, x, t, {"context": c}, train=False))
  return module, variables, apply


@pytest.fixture(scope="module")
def text():
  config = json.loads((FIXTURES / "lora_text" / "config.json").read_text())
  module, variables = clip_text_from_transformers(
      config, read_state_dict(str(FIXTURES / "lora_text" / "model.safetensors")))
  return module, variables, jax.jit(module.apply)


def run_unet(unet, ref, variables):
  _, _, apply = unet
  out = apply(variables, ref["x"].transpose(0, 2, 3, 1), ref["t"], ref["context"])
  return np.asarray(out).transpose(0, 3, 1, 2)


def run_text(text, ref, variables):
  return np.asarray(text[2](variables, ref["input_ids"]))


def read(tag):
  return lora_lib.read_lora(str(FIXTURES / FILES[tag]))


def max_diff(a, b):
  a, b = flatten_tree(a), flatten_tree(b)
  assert a.keys() == b.keys()
  return max(float(np.abs(np.asarray(a[k], np.float32) - np.asarray(b[k], np.float32)).max())
             for k in a)


@pytest.mark.parametrize("tag", ["peft", "kohya", "locon"])
def test_merged_unet_matches_diffusers(unet, ref, tag):
  merged = lora_lib.merge_lora(unet[1], read(tag))
  assert np.abs(run_unet(unet, ref, merged) - ref[f"unet_{tag}"]).max() < OUT_TOL


def test_scale_and_fused(unet, ref):
  lora_file = read("peft")
  half = lora_lib.merge_lora(unet[1], lora_file, 0.5)
  assert np.abs(run_unet(unet, ref, half) - ref["unet_peft_scale_0.5"]).max() < OUT_TOL
  full = run_unet(unet, ref, lora_lib.merge_lora(unet[1], lora_file))
  assert np.abs(full - ref["unet_peft_fused"]).max() < OUT_TOL


@pytest.mark.parametrize("tag", ["peft", "kohya"])
def test_merged_text_encoder_matches_diffusers(text, ref, tag):
  merged = lora_lib.merge_lora(text[1], read(tag), component="text_encoder")
  assert np.abs(run_text(text, ref, merged) - ref[f"text_{tag}"]).max() < OUT_TOL


def test_tolerances_are_meaningful(unet, ref):
  assert np.abs(ref["unet_peft"] - ref["unet_base"]).max() > 0.5
  assert np.abs(ref["unet_peft_scale_0.5"] - ref["unet_peft"]).max() > 0.5
  assert np.abs(ref["text_peft"] - ref["text_base"]).max() > 1.0
  assert np.abs(run_unet(unet, ref, unet[1]) - ref["unet_base"]).max() < OUT_TOL


def test_formats_and_alpha_rules():
  peft, kohya = read("peft"), read("kohya")
  assert (peft.format, kohya.format) == ("peft", "kohya")
  assert len(peft.component("unet")) == len(kohya.component("unet")) == 40
  q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
  assert peft.component("unet")[q].rank == 4 and peft.component("unet")[q].alpha == 8.0
  # proj_in is a 1x1 convolution in SD 1.x: its LoRA is too
  assert peft.component("unet")["mid_block.attentions.0.proj_in"].down.ndim == 4
  fc1 = peft.component("text_encoder")["encoder.layers.1.mlp.fc1"]  # rank/alpha_pattern
  assert (fc1.rank, fc1.alpha) == (2, 3.0)
  assert kohya.component("text_encoder")["encoder_layers_1_mlp_fc1"].alpha == 3.0


def test_kohya_and_peft_merge_to_the_same_weights(unet, text):
  peft, kohya = read("peft"), read("kohya")
  assert max_diff(lora_lib.merge_lora(unet[1], peft), lora_lib.merge_lora(unet[1], kohya)) == 0
  assert max_diff(lora_lib.merge_lora(text[1], peft, component="text_encoder"),
                  lora_lib.merge_lora(text[1], kohya, component="text_encoder")) == 0


def test_module_map_is_the_converters(unet):
  table = lora_lib.unet_modules(unet[1])
  assert table["up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"] == (
      "up_0_block_0_attn/block_0/attn1/to_q/kernel")
  assert table["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0"] == (
      "down_0_block_0_attn/block_0/attn1/to_out/kernel")
  assert table["up_blocks.0.resnets.1.conv_shortcut"] == "up_1_block_1/nin_shortcut/kernel"
  kernels = [p for p in flatten_tree(unet[1]["params"]) if p.endswith("/kernel")]
  assert sorted(table.values()) == sorted(kernels)  # every kernel, once


@pytest.mark.parametrize("component,tag", [("unet", "peft"), ("unet", "locon"),
                                           ("text_encoder", "kohya")])
def test_jgen_adapters_merge_as_the_file(unet, text, component, tag):
  params = unet[1] if component == "unet" else text[1]
  lora_file = read(tag)
  adapters, lora = lora_lib.lora_to_jgen_adapters(lora_file, params, component=component)
  assert isinstance(lora, Lora)
  inner = params["params"]
  assert sorted(lora.paths(inner)) == sorted(p[:-len("/lora_a")]
                                             for p in flatten_tree(adapters) if p.endswith("a"))
  want = lora_lib.merge_lora(params, lora_file, component=component)["params"]
  assert max_diff(lora.merge(inner, adapters), want) < WEIGHT_TOL
  nested, lora = lora_lib.lora_to_jgen_adapters(lora_file, params, component=component,
                                                prefix="net")  # e.g. SD's params["unet"]
  assert max_diff(lora.view({"net": inner, "lora": nested})["net"], want) < WEIGHT_TOL


@pytest.mark.parametrize("kind", ["peft", "kohya"])
def test_export_round_trips(unet, text, tmp_path, kind):
  pytest.importorskip("safetensors")
  source = read("kohya")
  ua, ul = lora_lib.lora_to_jgen_adapters(source, unet[1])
  ta, tl = lora_lib.lora_to_jgen_adapters(source, text[1], component="text_encoder")
  export = lora_export.export_peft if kind == "peft" else lora_export.export_kohya
  path = str(tmp_path / f"out_{kind}.safetensors")
  export(ua, ul, path, params=unet[1], text_encoder=(ta, tl, text[1]))
  back = lora_lib.read_lora(path)
  assert back.format == kind
  for component, params in (("unet", unet[1]), ("text_encoder", text[1])):
    assert max_diff(lora_lib.merge_lora(params, back, component=component),
                    lora_lib.merge_lora(params, source, component=component)) < WEIGHT_TOL
  if kind == "peft":  # SD 1.x proj_in goes out as a 1x1 convolution, alpha in the header
    assert back.component("unet")["mid_block.attentions.0.proj_in"].down.ndim == 4
    assert "text_encoder.lora_alpha" in json.loads(back.metadata["lora_adapter_metadata"])


def test_locon_export_round_trips(unet, tmp_path):
  pytest.importorskip("safetensors")
  source = read("locon")
  adapters, lora = lora_lib.lora_to_jgen_adapters(source, unet[1])
  path = str(tmp_path / "locon.safetensors")
  lora_export.export_kohya(adapters, lora, path, params=unet[1])
  back = lora_lib.read_lora(path)
  assert back.component("unet")["down_blocks_0_resnets_0_conv1"].down.shape == (2, 32, 3, 3)
  assert max_diff(lora_lib.merge_lora(unet[1], back), lora_lib.merge_lora(unet[1], source)) \
      < WEIGHT_TOL


def _write(path, tensors, metadata=None):
  safetensors = pytest.importorskip("safetensors.numpy")
  safetensors.save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path),
                        metadata=metadata)
  return str(path)


def test_old_names_and_missing_alpha(unet, tmp_path):
  state = read_state_dict(str(FIXTURES / FILES["peft"]))
  old = {}
  for name in state:
    if not name.startswith("unet."):
      continue
    new = name.replace(".lora_A.weight", ".lora.down.weight").replace(".lora_B.weight",
                                                                       ".lora.up.weight")
    new = new.replace(".attn1.to_q.", ".attn1.processor.to_q_lora.").replace(
        "processor.to_q_lora.lora.", "processor.to_q_lora.")
    old[new] = np.asarray(state[name])
  assert any("processor.to_q_lora.down.weight" in n for n in old)
  no_alpha = lora_lib.read_lora(_write(tmp_path / "old.safetensors", old))
  assert all(m.alpha == m.rank for m in no_alpha.component("unet").values())  # alpha = r
  with_alpha = read("peft")  # alpha 8 / r 4: twice the update of alpha = r
  assert max_diff(lora_lib.merge_lora(unet[1], no_alpha, 2.0),
                  lora_lib.merge_lora(unet[1], with_alpha)) < WEIGHT_TOL


@pytest.mark.parametrize("name,what", [
    ("lora_unet_down_blocks_0_resnets_0_conv1.hada_w1_a", "LoHa"),
    ("lora_unet_down_blocks_0_resnets_0_conv1.lokr_w1", "LoKr"),
    ("lora_unet_down_blocks_0_resnets_0_conv1.lora_mid.weight", "Tucker"),
    ("lora_unet_down_blocks_0_resnets_0_conv1.diff", "difference"),
    ("lora_unet_down_blocks_0_resnets_0_conv1.dora_scale", "DoRA"),
    ("lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", "SDXL"),
    ("lora_unet_input_blocks_1_1_proj_in.lora_down.weight", "input_blocks")])
def test_refused_kinds_say_why(tmp_path, name, what):
  path = _write(tmp_path / "x.safetensors", {name: np.zeros((2, 2), np.float32)})
  with pytest.raises(lora_lib.LoraFormatError, match=what):
    lora_lib.read_lora(path)


def test_wrong_model_is_named(unet, text):
  with pytest.raises(lora_lib.LoraFormatError, match="not a converted CLIP text model"):
    lora_lib.merge_lora(unet[1], read("peft"), component="text_encoder")
  with pytest.raises(lora_lib.LoraFormatError, match="not a converted diffusers U-Net"):
    lora_lib.merge_lora(text[1], read("peft"))


def test_diffusers_loads_jgen_exports(unet, text, ref, tmp_path):
  """diffusers itself reads jgen's peft and kohya files and gives its own outputs again."""
  torch = pytest.importorskip("torch")
  diffusers = pytest.importorskip("diffusers")
  transformers = pytest.importorskip("transformers")
  pytest.importorskip("peft")
  pipe_cls = diffusers.StableDiffusionPipeline
  source = read("peft")
  ua, ul = lora_lib.lora_to_jgen_adapters(source, unet[1])
  ta, tl = lora_lib.lora_to_jgen_adapters(source, text[1], component="text_encoder")
  shapes = json.loads((FIXTURES / "lora_unet" / "shapes.json").read_text())
  weights = {k: torch.from_numpy(v) for k, v in seeded_weights(shapes).items()}
  for kind, export in (("peft", lora_export.export_peft), ("kohya", lora_export.export_kohya)):
    path = str(tmp_path / f"{kind}.safetensors")
    export(ua, ul, path, params=unet[1], text_encoder=(ta, tl, text[1]))
    state, alphas, metadata = pipe_cls.lora_state_dict(path, return_lora_metadata=True)
    model = diffusers.UNet2DConditionModel.from_config(
        diffusers.UNet2DConditionModel.load_config(str(FIXTURES / "lora_unet"))).eval()
    model.load_state_dict(weights)
    pipe_cls.load_lora_into_unet({k: v for k, v in state.items() if k.startswith("unet.")},
                                 alphas, unet=model, metadata=metadata)
    encoder = transformers.CLIPTextModel.from_pretrained(str(FIXTURES / "lora_text")).eval()
    pipe_cls.load_lora_into_text_encoder(state, alphas, encoder, prefix="text_encoder",
                                         metadata=metadata)
    with torch.no_grad():
      out = model(torch.from_numpy(ref["x"]), torch.from_numpy(ref["t"]),
                  encoder_hidden_states=torch.from_numpy(ref["context"])).sample.numpy()
      hidden = encoder(torch.from_numpy(ref["input_ids"].astype(np.int64))).last_hidden_state
    assert np.abs(out - ref["unet_peft"]).max() < OUT_TOL, kind
    assert np.abs(hidden.numpy() - ref["text_peft"]).max() < OUT_TOL, kind
