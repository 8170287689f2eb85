"""diffusers U-Nets converted onto jgen's UNet, against diffusers' own outputs.

Fixtures: `benchmarks/unet_reference.py` (tiny random diffusers U-Nets, every weight redrawn,
and their outputs). Tolerance: 1e-5 absolute on outputs of magnitude ~1-3; float32 sums
taken in another order by XLA and torch differ by ~1e-6 here, while any layout error (a
transposed kernel, a misplaced pad, a swapped head split) moves outputs by 1e-2 or more.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.convert import files
from jgen.convert.common import ConversionError
from jgen.convert.single_file import (detect_parts, ldm_unet_to_diffusers_names,
                                      unet_config_from_state)
from jgen.convert.unet import UNetConfigError, unet_from_diffusers, unet_settings

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
TOL = 1e-5


def _folder(name):
  path = os.path.join(FIXTURES, f"unet_{name}")
  with open(os.path.join(path, "config.json")) as f:
    config = json.load(f)
  return config, files.read_state_dict(files.model_weights(path))


def _apply(module, variables, ref, name):
  x = jnp.asarray(ref[f"{name}_x"].transpose(0, 2, 3, 1))
  cond = ({"context": jnp.asarray(ref[f"{name}_context"])} if f"{name}_context" in ref
          else None)
  out = module.apply(variables, x, jnp.asarray(ref[f"{name}_t"]), cond, train=False)
  return np.asarray(out).transpose(0, 3, 1, 2)


@pytest.fixture(scope="module")
def ref():
  return np.load(os.path.join(FIXTURES, "unet.npz"))


@pytest.mark.parametrize("name", ["ddpm", "ddpm_defaults", "sd15", "sd21"])
def test_diffusers_folder_matches_reference(ref, name):
  config, state = _folder(name)
  module, variables = unet_from_diffusers(config, state)
  out = _apply(module, variables, ref, name)
  assert np.abs(out - ref[f"{name}_out"]).max() < TOL


def test_settings_of_the_two_layouts():
  ddpm = unet_settings(_folder("ddpm")[0])
  assert (ddpm["downsample_padding"], ddpm["flip_sin_to_cos"], ddpm["freq_shift"],
          ddpm["norm_eps"]) == (0, False, 1.0, 1e-6)
  sd21 = unet_settings(_folder("sd21")[0])
  assert sd21["attention"] == "transformer" and sd21["transformer_heads"] == (2, 4)
  assert sd21["attn_levels"] == (0, 1)


def test_legacy_attention_names(ref):
  config, _ = _folder("ddpm")
  state = files.read_state_dict(os.path.join(FIXTURES, "unet_ddpm_legacy.safetensors"))
  assert any(".query." in k for k in state)
  module, variables = unet_from_diffusers(config, state)
  assert np.abs(_apply(module, variables, ref, "ddpm") - ref["ddpm_out"]).max() < TOL


def test_single_file_layout_converts_to_the_folder_weights():
  config, state = _folder("sd15")
  single = files.read_state_dict(os.path.join(FIXTURES, "unet_sd15_ldm.safetensors"))
  assert detect_parts(single) == {"unet": "ldm"}
  inferred = unet_config_from_state(single, overrides={"attention_head_dim": 2,
                                                       "norm_num_groups": 4})
  for key in ("block_out_channels", "layers_per_block", "down_block_types", "up_block_types",
              "cross_attention_dim", "in_channels", "out_channels"):
    assert list(np.atleast_1d(inferred[key])) == list(np.atleast_1d(config[key])), key
  assert inferred["use_linear_projection"] is False
  _, a = unet_from_diffusers(config, state)
  _, b = unet_from_diffusers(inferred, ldm_unet_to_diffusers_names(single, inferred))
  flat_a = jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(a)])
  flat_b = jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(b)])
  assert flat_a.shape == flat_b.shape and bool(jnp.all(flat_a == flat_b))


def test_other_architecture_lists_missing_unexpected_and_misshaped():
  config, state = _folder("sd15")
  state = dict(state)
  del state["conv_in.bias"]
  state["extra.weight"] = np.zeros(3, np.float32)
  state["conv_out.weight"] = np.zeros((4, 16, 3, 3), np.float32)
  with pytest.raises(ConversionError) as e:
    unet_from_diffusers(config, state)
  assert e.value.missing == ["conv_in.bias"]
  assert e.value.unexpected == ["extra.weight"]
  assert [m[0] for m in e.value.misshaped] == ["conv_out.weight"]
  assert "conv_in.bias" in str(e.value) and "extra.weight" in str(e.value)


def test_sd15_weights_into_sd21_config_are_reported():
  _, state = _folder("sd15")
  config, _ = _folder("sd21")
  with pytest.raises(ConversionError) as e:
    unet_from_diffusers(config, state)
  assert e.value.missing  # the attention of level 1 and its up blocks


def test_unsupported_settings_are_named():
  config, _ = _folder("sd15")
  with pytest.raises(UNetConfigError, match="addition_embed_type"):
    unet_settings({**config, "addition_embed_type": "text_time"})
  with pytest.raises(UNetConfigError, match="not a U-Net"):
    unet_settings({**config, "_class_name": "AutoencoderKL"})


def test_live_diffusers_matches():
  torch = pytest.importorskip("torch")
  diffusers = pytest.importorskip("diffusers")
  torch.manual_seed(1)
  model = diffusers.UNet2DConditionModel(
      sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16),
      layers_per_block=2, cross_attention_dim=8, norm_num_groups=4, attention_head_dim=(2, 2),
      down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
      up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
      transformer_layers_per_block=2, use_linear_projection=True).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.copy_(torch.randn_like(p) * 0.2)
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  module, variables = unet_from_diffusers(dict(model.config), state)
  rng = np.random.RandomState(2)
  x, c = rng.randn(2, 4, 8, 8).astype(np.float32), rng.randn(2, 3, 8).astype(np.float32)
  t = np.array([0, 999])
  with torch.no_grad():
    want = model(torch.from_numpy(x), torch.from_numpy(t),
                 encoder_hidden_states=torch.from_numpy(c)).sample.numpy()
  got = module.apply(variables, jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.asarray(t),
                     {"context": jnp.asarray(c)}, train=False)
  assert np.abs(np.asarray(got).transpose(0, 3, 1, 2) - want).max() < TOL
