"""diffusers AutoencoderKL / VQModel -> jgen's LDMAutoencoder: outputs equal diffusers', the LDM
single-file names, the full mismatch report, refused configs, the first-stage method's layout.

The default tests read fixtures only (written by benchmarks/autoencoder_reference.py; no torch).
Tolerances, float32: the latents pass ~12 layers (convs summed in another order by XLA than by
torch, GroupNorm, a softmax) and agree to about 1e-6; the decoded images pass ~15 more and agree
to about 7e-6 (values of order 1). 2e-5 on latents and 1e-4 on images leave about 10x room for
another CPU's kernels while a wrong layout (a transposed kernel, a shifted pad, a misplaced
norm) is off by 1e-1 or more. The VQ fixture's nearest and second-nearest codes are at least
1e-3 apart (`vq_margin`), so the indices must be equal.
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jgen.autoencoder import first_stage as fs
from jgen.nn.ldm_networks import LDMDecoder, LDMEncoder
from jgen.convert.autoencoder import (autoencoder_config_from_state, autoencoder_from_diffusers,
                                      autoencoder_module, first_stage_config,
                                      ldm_vae_to_diffusers_names)
from jgen.convert.common import ConversionError, flatten_tree
from jgen.convert.files import read_state_dict

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
LATENT_TOL, IMAGE_TOL = 2e-5, 1e-4
TAGS = ("square", "wide")  # [2, 16, 16, 3] and [1, 16, 24, 3]


def _folder(name):
  config = json.loads((FIXTURES / name / "config.json").read_text())
  return config, read_state_dict(str(FIXTURES / name / "diffusion_pytorch_model.safetensors"))


@pytest.fixture(scope="module")
def ref():
  return dict(np.load(FIXTURES / "autoencoder.npz"))


@pytest.fixture(scope="module")
def kl():
  config, state = _folder("vae_kl")
  return (config, state, *autoencoder_from_diffusers(config, state))


@pytest.fixture(scope="module")
def vq():
  config, state = _folder("vq")
  return (config, state, *autoencoder_from_diffusers(config, state))


def _close(got, want, tol):
  got = np.asarray(got)
  assert got.shape == want.shape
  err = float(np.max(np.abs(got - want)))
  assert err < tol, f"max |diff| {err:.2e} >= {tol:.0e}"


@pytest.mark.parametrize("tag", TAGS)
def test_kl_equals_diffusers(kl, ref, tag):
  _, _, ae, variables = kl
  x = ref[f"x_{tag}"]
  mean, logvar = jax.jit(lambda v, x: ae.apply(v, x, method=ae.posterior))(variables, x)
  _close(mean, ref[f"kl_mean_{tag}"], LATENT_TOL)
  _close(logvar, ref[f"kl_logvar_{tag}"], LATENT_TOL)
  decoded = jax.jit(lambda v, z: ae.apply(v, z, method=ae.decode))(variables, mean)
  _close(decoded, ref[f"kl_decoded_{tag}"], IMAGE_TOL)
  assert ae.scaling_factor == pytest.approx(0.18215) and ae.shift_factor == 0.0


@pytest.mark.parametrize("tag", TAGS)
def test_vq_equals_diffusers(vq, ref, tag):
  _, _, ae, variables = vq
  assert ref["vq_margin"] > 1e-4
  x = ref[f"x_{tag}"]

  @jax.jit
  def run(v, x):
    h = ae.apply(v, x, method=ae.moments)
    q = ae.apply(v, h, method=ae.quantize)
    return (h, q.z_q, q.indices, ae.apply(v, h, quantize=True, method=ae.decode),
            ae.apply(v, x, method=ae.encode), ae.apply(v, q.indices, method=ae.decode_indices))

  h, z_q, indices, decoded, encoded, from_indices = run(variables, x)
  _close(h, ref[f"vq_h_{tag}"], LATENT_TOL)
  np.testing.assert_array_equal(indices, ref[f"vq_indices_{tag}"])
  _close(z_q, ref[f"vq_quantized_{tag}"], LATENT_TOL)
  _close(decoded, ref[f"vq_decoded_{tag}"], IMAGE_TOL)
  # encode = the codes (up to the straight-through z + (e - z) rounding); decode_indices of
  # the indices = decode of the codes.
  _close(encoded, z_q, 1e-7)
  _close(from_indices, ref[f"vq_decoded_{tag}"], IMAGE_TOL)


def test_vq_embed_dim_other_than_latent_channels(vq):
  config, _, ae, variables = vq
  assert (config["latent_channels"], config["vq_embed_dim"]) == (4, 3)
  p = variables["params"]
  assert p["codebook"].shape == (16, 3)
  assert p["encoder"]["quant_conv"]["kernel"].shape == (1, 1, 4, 3)
  assert p["decoder"]["post_quant_conv"]["kernel"].shape == (1, 1, 3, 4)
  with pytest.raises(ValueError, match="vq_embed_dim=3 != latent_channels=4"):
    first_stage_config(config)
  from_shapes = autoencoder_config_from_state(vq[1], norm_num_groups=4)
  assert {k: v for k, v in config.items() if k in from_shapes} == from_shapes


def test_ldm_single_file_converts_to_the_same_tree(kl):
  config, _, _, variables = kl
  single = read_state_dict(str(FIXTURES / "vae_kl_ldm.safetensors"))
  assert any(k.startswith("model.diffusion_model.") for k in single)
  view = ldm_vae_to_diffusers_names(single)
  # LDM numbers decoder levels from the finest: its decoder.up.1 is diffusers' up_blocks.0.
  np.testing.assert_array_equal(view["decoder.up_blocks.0.upsamplers.0.conv.weight"],
                                single["first_stage_model.decoder.up.1.upsample.conv.weight"])
  assert view["encoder.mid_block.attentions.0.to_q.weight"].shape == (16, 16, 1, 1)
  from_shapes = autoencoder_config_from_state(view, norm_num_groups=4)
  assert {k: v for k, v in config.items() if k in from_shapes} == from_shapes
  _, from_single = autoencoder_from_diffusers(from_shapes, view)
  want, got = flatten_tree(variables), flatten_tree(from_single)
  assert set(got) == set(want)
  for path in want:
    np.testing.assert_array_equal(got[path], want[path], err_msg=path)
  with pytest.raises(ValueError, match="prefix 'vae.'"):
    ldm_vae_to_diffusers_names(single, prefix="vae.")


def test_mismatched_state_dict_lists_every_name(kl):
  config, state, _, _ = kl
  bad = dict(state)
  del bad["decoder.conv_out.bias"]
  bad["encoder.extra.weight"] = np.zeros((3,), np.float32)
  bad["quant_conv.weight"] = np.zeros((8, 8, 3, 3), np.float32)
  with pytest.raises(ConversionError) as info:
    autoencoder_from_diffusers(config, bad)
  e = info.value
  assert e.missing == ["decoder.conv_out.bias"]
  assert e.unexpected == ["encoder.extra.weight"]
  assert [(m[0], m[1]) for m in e.misshaped] == [("quant_conv.weight",
                                                 "encoder/quant_conv/kernel")]
  assert "decoder.conv_out.bias" in str(e) and "encoder.extra.weight" in str(e)
  # Another architecture's config on this file: the missing level, reported at once.
  with pytest.raises(ConversionError, match="missing") as info:
    autoencoder_from_diffusers({**config, "layers_per_block": 2}, state)
  assert "encoder.down_blocks.0.resnets.1.conv1.weight" in info.value.missing


@pytest.mark.parametrize("change,match", [
    ({"norm_type": "spatial"}, "spatial"),
    ({"down_block_types": ["DownEncoderBlock2D", "AttnDownEncoderBlock2D"]}, "down_block_types"),
    ({"block_out_channels": [8, 12]}, "multiples"),
    ({"act_fn": "gelu"}, "silu"),
    ({"_class_name": "AutoencoderTiny"}, "AutoencoderKL"),
])
def test_unsupported_configs_are_refused(change, match):
  config, _ = _folder("vq")
  with pytest.raises(ValueError, match=match):
    autoencoder_module({**config, **change})


def test_first_stage_method_takes_the_converted_tree(kl, ref):
  """The run record's config values build a FirstStage whose parameter tree is the converted
  one, and its encode/decode agree with the module's."""
  config, _, ae, variables = kl
  c = first_stage_config(config)
  assert c["model"] == dict(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
                            num_groups=4, dropout=0.0)
  assert c["bottleneck"] == {"kind": "kl", "embed_dim": 4}
  assert c["data"] == {"channels": 3} and c["ldm"]["scale_factor"] == pytest.approx(0.18215)
  shared, b = c["model"], c["bottleneck"]
  method = fs.FirstStage(  # as first_stage.make_method builds it from these values
      encoder=LDMEncoder(out_channels=2 * b["embed_dim"], **shared),
      decoder=LDMDecoder(out_channels=c["data"]["channels"], **shared), discriminator=None,
      tx_ae=optax.sgd(0.0), tx_d=None, holdout=np.zeros((1, 16, 16, 3), np.float32),
      perceptual=fs.Perceptual("none", "none"), bottleneck=b["kind"], disc_weight=0.0)
  x = ref["x_square"]
  abstract = jax.eval_shape(lambda r: method.init(r, {"image": x}).params["autoencoder"],
                            jax.random.key(0))
  shapes = jax.tree.map(lambda a: a.shape, abstract)
  assert jax.tree.map(lambda a: a.shape, variables["params"]) == shapes

  @jax.jit
  def both(variables, x):
    z = method.encode(variables["params"], x)
    return (z, ae.apply(variables, x, method=ae.encode), method.decode(variables["params"], z),
            ae.apply(variables, z, method=ae.decode))

  z, z_module, image, image_module = both(variables, x)
  np.testing.assert_array_equal(z, z_module)
  np.testing.assert_array_equal(image, image_module)


def test_non_square_images_and_their_errors():
  enc = LDMEncoder(ch=8, ch_mult=(1, 2, 2), num_res_blocks=1, num_groups=4, out_channels=6)
  x = jnp.zeros((1, 16, 24, 3))
  shapes = jax.eval_shape(lambda r, x: enc.init(r, x, train=False), jax.random.key(0), x)
  rng = np.random.default_rng(0)  # (a jitted init compiles for ~15 s on two cores)
  params = jax.tree.map(lambda a: 0.1 * rng.standard_normal(a.shape, np.float32), shapes)
  y = jax.jit(lambda p, x: enc.apply(p, x, train=False))(params, x + 0.5)
  assert y.shape == (1, 4, 6, 6) and np.isfinite(y).all()
  # The parameter tree does not depend on the image's shape.
  square = jax.eval_shape(lambda r, x: enc.init(r, x, train=False), jax.random.key(0),
                          jnp.zeros((1, 16, 16, 3)))
  assert jax.tree.map(jnp.shape, square) == jax.tree.map(jnp.shape, params)
  with pytest.raises(ValueError, match="not divisible"):
    jax.eval_shape(lambda x: enc.apply(params, x, train=False), jnp.zeros((1, 16, 18, 3)))
  with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
    jax.eval_shape(lambda x: enc.apply(params, x, train=False), jnp.zeros((16, 16, 3)))


# ------------------------------------------------------------------ live, against diffusers


def _torch_nhwc(t):
  return np.transpose(t.detach().numpy(), (0, 2, 3, 1))


def _state(model):
  return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def _perturb(model, seed):
  torch = pytest.importorskip("torch")
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.05 * torch.randn(p.shape, generator=gen))
  return model.eval()


LIVE_KL = [
    # three levels, two blocks, no quant convs (SD3 / Flux VAEs), a 3-channel latent
    dict(block_out_channels=[8, 16, 16], layers_per_block=2, latent_channels=3,
         norm_num_groups=8, use_quant_conv=False, use_post_quant_conv=False,
         scaling_factor=1.5305, shift_factor=0.0609),
    # no middle attention, one-channel images
    dict(block_out_channels=[8, 16], layers_per_block=1, latent_channels=4, norm_num_groups=4,
         in_channels=1, out_channels=1, mid_block_add_attention=False),
]


@pytest.mark.parametrize("kw", LIVE_KL)
def test_live_kl(kw):
  diffusers = pytest.importorskip("diffusers")
  torch = pytest.importorskip("torch")
  levels = len(kw["block_out_channels"])
  config = dict(down_block_types=["DownEncoderBlock2D"] * levels,
                up_block_types=["UpDecoderBlock2D"] * levels, **kw)
  torch.manual_seed(1)
  vae = _perturb(diffusers.AutoencoderKL(**config), 2)
  channels = kw.get("in_channels", 3)
  x = np.random.default_rng(3).uniform(-1, 1, (1, 16, 8 * levels, channels)).astype(np.float32)
  with torch.no_grad():
    dist = vae.encode(torch.from_numpy(np.transpose(x, (0, 3, 1, 2)))).latent_dist
    decoded = vae.decode(dist.mean).sample
  ae, variables = autoencoder_from_diffusers(dict(vae.config), _state(vae))

  @jax.jit
  def run(variables, x):
    mean, logvar = ae.apply(variables, x, method=ae.posterior)
    return mean, logvar, ae.apply(variables, mean, method=ae.decode)

  mean, logvar, image = run(variables, x)
  _close(mean, _torch_nhwc(dist.mean), LATENT_TOL)
  _close(logvar, _torch_nhwc(dist.logvar), LATENT_TOL)
  _close(image, _torch_nhwc(decoded), IMAGE_TOL)
  assert ae.shift_factor == pytest.approx(kw.get("shift_factor", 0.0))
  if kw.get("shift_factor"):
    with pytest.raises(ValueError, match="shift_factor"):
      first_stage_config(dict(vae.config))


def test_live_vq_old_attention_names_and_code_lookup():
  diffusers = pytest.importorskip("diffusers")
  torch = pytest.importorskip("torch")
  config = dict(down_block_types=["DownEncoderBlock2D"] * 2,
                up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[8, 16],
                layers_per_block=1, latent_channels=3, num_vq_embeddings=8, norm_num_groups=4,
                lookup_from_codebook=True, force_upcast=True)
  torch.manual_seed(4)
  model = _perturb(diffusers.VQModel(**config), 5)
  x = np.random.default_rng(6).uniform(-1, 1, (2, 8, 16, 3)).astype(np.float32)
  with torch.no_grad():
    h = model.encode(torch.from_numpy(np.transpose(x, (0, 3, 1, 2)))).latents
    model.quantize.embedding.weight.copy_(h.permute(0, 2, 3, 1).reshape(-1, 3)[::2][:8])
    _, _, (_, _, indices) = model.quantize(h)
    indices = indices.reshape(2, 4, 8)
    looked_up = model.decode(indices, force_not_quantize=True, shape=(2, 4, 8, 3)).sample
  state = _state(model)
  old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
  renamed = {}
  for k, v in state.items():
    for new, was in old.items():
      k = k.replace(f"attentions.0.{new}.", f"attentions.0.{was}.")
    renamed[k] = v
  assert any(".query." in k for k in renamed)
  ae, variables = autoencoder_from_diffusers(dict(model.config), renamed, dtype=jnp.bfloat16)
  assert ae.encoder.dtype == jnp.float32  # force_upcast

  @jax.jit
  def run(variables, x):
    got = ae.apply(variables, x, method=ae.encode_indices)
    return got, ae.apply(variables, got, method=ae.decode_indices)

  got, image = run(variables, x)
  np.testing.assert_array_equal(got, indices.numpy())
  _close(image, _torch_nhwc(looked_up), IMAGE_TOL)
  assert first_stage_config(dict(model.config))["bottleneck"] == {"kind": "vq", "embed_dim": 3,
                                                                  "num_codes": 8}
