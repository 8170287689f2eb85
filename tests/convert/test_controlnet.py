"""diffusers ControlNetModel -> jgen's ControlNet: residuals and the controlled U-Net's output
equal diffusers' (conditioning scales, guess mode), BGR folded into the weights, the full
mismatch report, refused configs, and the join with a converted U-Net.

The default tests read fixtures only (written by benchmarks/controlnet_reference.py; no torch).
Tolerance, float32: the residuals pass the condition embedding (3 convs), the copied encoder
(~6 blocks: convs summed by XLA in another order than by torch, GroupNorm, softmax attention) and
a 1x1 conv, and agree to about 1.5e-6 (values up to 3); the controlled output passes the up path
too (~8 more blocks) and agrees to about 1.8e-6 (values up to 1.4). 2e-5 leaves about 10x room
for another CPU's kernels, while a wrong layout (a transposed kernel, a one-sided pad of the
stride-2 hint convs, a skip in the wrong place, an unscaled residual) is off by 1e-2 or more:
the control changes the output by 0.78 in the fixture.
"""

import json
import pathlib

import jax
import numpy as np
import pytest

from jgen.convert.common import ConversionError
from jgen.convert.controlnet import controlled_unet, controlnet_from_diffusers
from jgen.convert.files import read_state_dict
from jgen.convert.unet import UNetConfigError, unet_from_diffusers

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
TOL = 2e-5
SCALES = {"10": 1.0, "05": 0.5}


def _folder(name):
  config = json.loads((FIXTURES / name / "config.json").read_text())
  return config, read_state_dict(str(FIXTURES / name / "diffusion_pytorch_model.safetensors"))


def _close(got, want, tol=TOL):
  got = np.asarray(got)
  assert got.shape == want.shape
  err = float(np.max(np.abs(got - want)))
  assert err < tol, f"max |diff| {err:.2e} >= {tol:.0e}"


@pytest.fixture(scope="module")
def ref():
  out = dict(np.load(FIXTURES / "controlnet.npz"))
  out["hint_pm1"] = 2.0 * out["hint"] - 1.0  # jgen's hint convention: [-1, 1]
  return out


@pytest.fixture(scope="module")
def converted():
  unet, unet_variables = unet_from_diffusers(*_folder("controlnet_unet"))
  control, control_variables = controlnet_from_diffusers(*_folder("controlnet"))
  return unet, unet_variables, control, control_variables


@pytest.fixture(scope="module")
def controlled(converted, ref):
  """The joined model and its output as a function of the (traced) conditioning scale."""
  model, variables = controlled_unet(*converted)
  conditions = {"context": ref["context"], "hint": ref["hint_pm1"]}
  fn = jax.jit(lambda v, s: model.apply(v, ref["latents"], ref["timesteps"], conditions,
                                        train=False, conditioning_scale=s))
  return model, variables, fn


@pytest.fixture(scope="module")
def residuals(converted, ref):
  """The control branch's residuals as a function of (guess mode, the traced scale)."""
  _, _, control, variables = converted
  clones = {guess: control.clone(guess_mode=guess) for guess in (False, True)}
  fns = {guess: jax.jit(lambda v, s, c=c: c.apply(
      v, ref["latents"], ref["timesteps"], {"context": ref["context"]}, ref["hint_pm1"],
      train=False, conditioning_scale=s)) for guess, c in clones.items()}
  return lambda tag: fns[tag == "guess"](variables, SCALES.get(tag, 1.0))


@pytest.mark.parametrize("tag", [*SCALES, "guess"])
def test_residuals_equal_diffusers(residuals, ref, tag):
  got = residuals(tag)
  names = sorted(k for k in ref if k.startswith("down_") and k.endswith(f"_{tag}"))
  assert len(got) == len(names) + 1 == 5
  for i, r in enumerate(got[:-1]):
    _close(r, ref[f"down_{i}_{tag}"])
  _close(got[-1], ref[f"mid_{tag}"])


@pytest.mark.parametrize("tag", list(SCALES))
def test_controlled_unet_equals_diffusers(controlled, ref, tag):
  _, variables, fn = controlled
  _close(fn(variables, SCALES[tag]), ref[f"out_{tag}"])


def test_scale_zero_is_the_base_and_the_attribute_is_the_default(controlled, ref):
  model, variables, fn = controlled
  _close(fn(variables, 0.0), ref["out_base"])
  half = model.clone(conditioning_scale=0.5)
  conditions = {"context": ref["context"], "hint": ref["hint_pm1"]}
  _close(jax.jit(lambda v: half.apply(v, ref["latents"], ref["timesteps"], conditions,
                                      train=False))(variables), ref["out_05"])


def test_guess_mode_output_equals_diffusers(controlled, ref):
  model, variables, _ = controlled
  conditions = {"context": ref["context"], "hint": ref["hint_pm1"]}
  got = jax.jit(lambda v: model.clone(guess_mode=True).apply(
      v, ref["latents"], ref["timesteps"], conditions, train=False))(variables)
  _close(got, ref["out_guess"])


def test_layout_and_tree(converted):
  unet, _, control, variables = converted
  assert control.hint_layout == "pixel" and control.hint_channels == (8, 16)
  assert control.hint_factor == 2 and control.hint_range == (0.0, 1.0)
  params = variables["params"]
  assert {f"hint_{i}" for i in range(3)} | {"hint_zero", "zero_mid"} <= set(params)
  assert {f"zero_{i}" for i in range(4)} <= set(params)
  assert not any(k.startswith("up_") or k in ("conv_out", "norm_out") for k in params)
  assert params["hint_2"]["kernel"].shape == (3, 3, 8, 16)  # the stride-2 conv c_1 -> c_2
  assert control.unet.attn_levels == unet.attn_levels == (0,)


def test_bgr_is_folded_into_the_first_conv(converted):
  config, state = _folder("controlnet")
  _, bgr = controlnet_from_diffusers({**config, "controlnet_conditioning_channel_order": "bgr"},
                                     state)
  rgb = converted[3]["params"]
  np.testing.assert_array_equal(bgr["params"]["hint_0"]["kernel"],
                                rgb["hint_0"]["kernel"][:, :, ::-1, :])
  np.testing.assert_array_equal(bgr["params"]["hint_1"]["kernel"], rgb["hint_1"]["kernel"])


def test_hint_of_the_wrong_size_is_refused(converted, ref):
  _, _, control, variables = converted
  with pytest.raises(ValueError, match=r"2x the image's size"):
    control.apply(variables, ref["latents"], ref["timesteps"], {"context": ref["context"]},
                  ref["hint_pm1"][:, ::2, ::2], train=False)


def test_a_unet_state_dict_is_reported_in_full():
  config, _ = _folder("controlnet")
  _, unet_state = _folder("controlnet_unet")
  with pytest.raises(ConversionError) as err:
    controlnet_from_diffusers(config, unet_state)
  e = err.value
  assert "controlnet_cond_embedding.conv_in.weight" in e.missing
  assert "controlnet_mid_block.weight" in e.missing
  assert "controlnet_down_blocks.3.bias" in e.missing
  assert "conv_out.weight" in e.unexpected
  assert any(n.startswith("up_blocks.1.attentions.0.") for n in e.unexpected)
  assert "controlnet_cond_embedding.conv_in.weight" in str(e) and "up_blocks" in str(e)


def test_another_embedding_layout_is_reported_in_full():
  config, state = _folder("controlnet")
  with pytest.raises(ConversionError) as err:  # a config saying 3 levels, weights for 2
    controlnet_from_diffusers({**config, "conditioning_embedding_out_channels": [8, 16, 32]},
                              state)
  e = err.value
  assert set(e.missing) == {f"controlnet_cond_embedding.blocks.{k}.{p}"
                            for k in (2, 3) for p in ("weight", "bias")}
  assert [m[0] for m in e.misshaped] == ["controlnet_cond_embedding.conv_out.weight"]


@pytest.mark.parametrize("change, match", [
    ({"global_pool_conditions": True}, "global_pool_conditions"),
    ({"mid_block_scale_factor": 2.0}, "mid_block_scale_factor"),
    ({"controlnet_conditioning_channel_order": "rbg"}, "channel_order"),
    ({"conditioning_embedding_out_channels": None}, "conditioning_embedding_out_channels"),
    ({"_class_name": "UNet2DConditionModel"}, "unet_from_diffusers"),
    ({"addition_embed_type": "text_time"}, "addition_embed_type"),
])
def test_refused_configs(change, match):
  config, state = _folder("controlnet")
  with pytest.raises(UNetConfigError, match=match):
    controlnet_from_diffusers({**config, **change}, state)


def test_a_controlnet_of_another_unet_is_refused(converted):
  unet, unet_variables, control, control_variables = converted
  with pytest.raises(ValueError, match=r"transformer_heads"):
    controlled_unet(unet.clone(transformer_heads=(4, 4)), unet_variables, control,
                    control_variables)


def test_live_diffusers_equals_jgen():
  """A fresh SD 2.x-style model: attention on the last level, 2 blocks, linear projections,
  per-level heads, a 4x hint of 1 BGR channel, guess mode at scale 0.7."""
  diffusers = pytest.importorskip("diffusers")
  torch = pytest.importorskip("torch")
  torch.manual_seed(7)
  unet = diffusers.UNet2DConditionModel(
      sample_size=8, in_channels=4, out_channels=4, block_out_channels=[8, 16],
      layers_per_block=2, down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
      up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"], cross_attention_dim=6,
      attention_head_dim=[2, 4], norm_num_groups=4,
      use_linear_projection=True).eval()
  controlnet = diffusers.ControlNetModel.from_unet(
      unet, conditioning_embedding_out_channels=(4, 8, 8), conditioning_channels=1,
      controlnet_conditioning_channel_order="bgr").eval()
  gen = torch.Generator().manual_seed(8)
  with torch.no_grad():
    for model in (unet, controlnet):
      for p in model.parameters():
        p.copy_(0.2 * torch.randn(p.shape, generator=gen))
  rng = np.random.default_rng(9)
  x = rng.standard_normal((1, 4, 8, 4)).astype(np.float32)
  hint = rng.uniform(0, 1, (1, 16, 32, 1)).astype(np.float32)
  context = rng.standard_normal((1, 3, 6)).astype(np.float32)
  t = np.array([321])
  nchw = lambda a: torch.from_numpy(np.ascontiguousarray(np.transpose(a, (0, 3, 1, 2))))
  with torch.no_grad():
    args = (nchw(x), torch.from_numpy(t), torch.from_numpy(context))
    down, mid = controlnet(*args, controlnet_cond=nchw(hint), conditioning_scale=0.7,
                           guess_mode=True, return_dict=False)
    want = unet(*args, down_block_additional_residuals=down,
                mid_block_additional_residual=mid).sample.numpy().transpose(0, 2, 3, 1)
  state = lambda m: {k: v.numpy() for k, v in m.state_dict().items()}
  model, variables = controlled_unet(*unet_from_diffusers(dict(unet.config), state(unet)),
                                     *controlnet_from_diffusers(dict(controlnet.config),
                                                                state(controlnet)))
  got = jax.jit(lambda v: model.clone(guess_mode=True).apply(
      v, x, t, {"context": context, "hint": 2 * hint - 1}, train=False,
      conditioning_scale=0.7))(variables)
  assert np.abs(want).max() > 0.1
  _close(got, want)
