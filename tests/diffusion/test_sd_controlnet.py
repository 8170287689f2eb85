"""Stable Diffusion with a diffusers ControlNet (`diffusion.sd_controlnet`,
`jgen.convert.controlnet_pipeline`), against diffusers' images.

Fixture: `benchmarks/sd_controlnet_reference.py`: ``ControlNetModel.from_unet`` of the tiny
sd_pipeline fixture's U-Net (hint encoder (8, 16): the 8 x 8 control image of a 4 x 4 latent),
randomised, and ``StableDiffusionControlNetPipeline``'s images for fixed latents and control
images, 2 DDIM steps, guidance 5, ``controlnet_conditioning_scale`` 1.0, 0.5 and 0.0. Tolerance
on the images (in [0, 1]): 2e-5, as for the plain pipeline (`tests/convert/test_pipeline.py`);
the control branch moves them by ~2e-3 at scale 1 and ~1e-3 at 0.5.
"""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.convert import controlnet_pipeline, pipeline
from jgen.diffusion import sd_controlnet
from jgen.train import rules as rules_lib
from jgen.train import run_record
from jgen.train.inference import restore_for_inference
from jgen.train.method import SamplesWithoutData, Translates, load_method

FIXTURES = os.path.join(os.path.dirname(__file__), os.pardir, "convert", "fixtures")
PROMPTS = ("a photo of a cat", "an astronaut riding a horse, oil painting")


@pytest.fixture(scope="module")
def ref():
  return np.load(os.path.join(FIXTURES, "sd_controlnet.npz"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """(base SD workdir, converted ControlNet workdir)."""
  root = tmp_path_factory.mktemp("sd_controlnet")
  base, workdir = str(root / "sd"), str(root / "cn")
  pipeline.convert(os.path.join(FIXTURES, "sd_pipeline"), base)
  result = controlnet_pipeline.convert_controlnet(os.path.join(FIXTURES, "sd_controlnet"), base,
                                                  workdir)
  assert result["method"] == "diffusion.sd_controlnet"
  assert "--config.controlnet.hint_channels='(8, 16)'" in result["overrides"]
  return base, workdir


@pytest.fixture(scope="module")
def restored(runs):
  config = run_record.latest_config(runs[1])
  config.sample.prompts = "|".join(PROMPTS)
  config.sample.steps = 2
  method, _, state = restore_for_inference(config, runs[1])
  return config, method, state


@pytest.fixture(scope="module")
def images_fn(restored, ref):
  """``(state, k) -> images`` of the fixture's prompts, control images and latents, one jit
  whose strength k is an argument (compiled once for every test that uses it)."""
  method = restored[1]
  ids = jnp.asarray(ref["ids"])
  return jax.jit(lambda s, k: method.sample_images(
      s, jax.random.key(0), ids[:2], ids[2:], jnp.asarray(ref["control"]) * 2 - 1,
      guidance_scale=5.0, conditioning_scale=k,
      x_T=jnp.asarray(ref["latents"].transpose(0, 2, 3, 1))))


def test_images_equal_diffusers_at_both_scales(restored, ref, images_fn):
  _, method, state = restored
  assert isinstance(method, Translates) and isinstance(method, SamplesWithoutData)
  for tag, scale in (("10", 1.0), ("05", 0.5)):
    got = (np.asarray(images_fn(state, jnp.float32(scale))) + 1) / 2
    assert np.abs(got - ref[f"images_{tag}"]).max() < 2e-5, tag
    assert np.abs(got - ref["images_00"]).max() > 5e-4  # the control is seen
  assert images_fn._cache_size() == 1  # pylint: disable=protected-access  (k is an argument)


def test_scale_zero_is_plain_stable_diffusion(restored, ref, images_fn):
  _, method, state = restored
  got = np.asarray(images_fn(state, jnp.float32(0.0)))
  ids = jnp.asarray(ref["ids"])
  plain = np.asarray(jax.jit(lambda s: method.sd.sample_tokens(
      s, jax.random.key(0), ids[:2], ids[2:], guidance_scale=5.0,
      x_T=jnp.asarray(ref["latents"].transpose(0, 2, 3, 1))))(state))
  np.testing.assert_allclose(got, plain, atol=1e-6)
  assert np.abs((got + 1) / 2 - ref["images_00"]).max() < 2e-5


def test_translate_draws_each_condition_with_each_prompt(restored, ref):
  config, method, state = restored
  assert method.translation_names == PROMPTS
  source = jnp.asarray(ref["control"][:1]) * 2 - 1
  out = jax.jit(method.translate)(state, jax.random.key(3), source)
  assert out.shape == (1, 2, 8, 8, 3) and bool(jnp.all(jnp.isfinite(out)))
  inputs = method.translation_inputs({"source": source, "target": source})
  assert set(inputs) == {"source"}  # two prompts: no single true translation
  with pytest.raises(ValueError, match="ControlNet samples for condition images"):
    method.sample(state, jax.random.key(0), 2)
  assert config.controlnet.conditioning_scale == 1.0
  assert float(method.sample_frozen["conditioning_scale"]) == 1.0


def test_bad_hint_shape_is_a_clear_error(restored, ref):
  _, method, state = restored
  ids = jnp.asarray(ref["ids"])
  with pytest.raises(ValueError, match=r"\[B, 8, 8, 3\].*data.image_size=8"):
    method.sample_latents(state, jax.random.key(0), ids[:2], ids[2:], jnp.zeros((2, 4, 4, 3)))
  with pytest.raises(ValueError, match=r"\[B, 8, 8, 3\]"):
    method.translate(state, jax.random.key(0), jnp.zeros((2, 8, 8, 1)))
  with pytest.raises(KeyError, match="derived:edges:folder"):
    method.loss_fn(state.params, state.frozen, {"image": jnp.zeros((2, 8, 8, 3))},
                   jax.random.key(0))


def test_fine_tuning_step_trains_only_the_controlnet(restored):
  config, _, state = restored
  config = config.copy_and_resolve_references()
  config.optim.rules = (("control/.*", 1.0), (".*", "frozen"))
  config.optim.lr = 1e-2
  method = load_method(config)
  state = state.with_rules(config.optim.rules)
  assert all(k.startswith("control/") for k in rules_lib.flat(state.trainable()))
  rng = np.random.default_rng(0)
  image = jnp.asarray(rng.uniform(-1, 1, (2, 8, 8, 3)), jnp.float32)
  batch = {"source": -image, "target": image}  # a derived pair source's fields
  new, metrics = jax.jit(method.train_step)(state, batch, jax.random.key(1))
  assert np.isfinite(float(metrics["loss"]))
  before, after = rules_lib.flat(state.params), rules_lib.flat(new.params)
  moved = {k for k in before if not np.array_equal(np.asarray(before[k]), np.asarray(after[k]))}
  assert moved and all(k.startswith("control/") for k in moved)
  assert any(k.startswith("control/zero_") for k in moved)
  for name in ("text_encoder", "autoencoder"):
    for a, b in zip(jax.tree.leaves(state.frozen[name]), jax.tree.leaves(new.frozen[name])):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_variants():
  from tests.conftest import load_experiment  # pylint: disable=import-outside-toplevel
  for variant in (None, "arch=sd21", "kind=train", "kind=finetune,arch=sd21"):
    config = load_experiment("sd/controlnet", variant)
    assert config.controlnet.hint_channels == (16, 32, 96, 256)
  method = load_method(load_experiment("sd/controlnet", "kind=train,arch=tiny"))
  assert method.hint_shape == (32, 32, 3)
  with pytest.raises(ValueError, match="kind is one of sample, train, finetune"):
    load_experiment("sd/controlnet", "kind=bogus")


def test_rules_that_train_the_unet_are_refused(restored):
  config = restored[0].copy_and_resolve_references()
  config.optim.rules = ()
  with pytest.raises(ValueError, match="control/.*frozen"):
    sd_controlnet.make_method(config)
  config.optim.rules = ((".*", "frozen"),)
  config.controlnet.hint_channels = (8, 16, 32)
  with pytest.raises(ValueError, match="hint_channels 2 entries"):
    sd_controlnet.make_method(config)


def test_controlnet_of_another_unet_or_base_is_refused(runs, tmp_path):
  base, workdir = runs
  with pytest.raises(ValueError, match="another U-Net"):
    controlnet_pipeline.convert_controlnet(os.path.join(FIXTURES, "controlnet"), base,
                                           str(tmp_path / "x"))
  with pytest.raises(ValueError, match="is a diffusion.sd_controlnet run"):
    controlnet_pipeline.convert_controlnet(os.path.join(FIXTURES, "sd_controlnet"), workdir,
                                           str(tmp_path / "y"))
  with pytest.raises(FileNotFoundError, match="no jgen checkpoint"):
    controlnet_pipeline.convert_controlnet(os.path.join(FIXTURES, "sd_controlnet"),
                                           str(tmp_path), str(tmp_path / "z"))


def _pngs(folder, n, size, seed):
  from PIL import Image  # pylint: disable=import-outside-toplevel
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(seed)
  for i in range(n):
    Image.fromarray(rng.integers(0, 256, (size, size, 3), np.uint8)).save(
        os.path.join(folder, f"{i:02d}.png"))
  return folder


@pytest.mark.slow
def test_train_variant_through_the_loop_then_sample_a_folder(runs, tmp_path):
  """experiments/sd/controlnet.py:kind=train on the converted tiny SD (its U-Net loaded twice, the
  copy into params/control) for 2 steps on derived edges, then --mode=sample of the converted
  ControlNet on a folder of condition images."""
  import jgen.run  # pylint: disable=import-outside-toplevel
  from jgen.train.checkpoint import Checkpointer  # pylint: disable=import-outside-toplevel
  from tests.conftest import load_experiment  # pylint: disable=import-outside-toplevel
  base, converted = runs
  config = load_experiment("sd/controlnet", "kind=train")
  arch = controlnet_pipeline._leaves(  # pylint: disable=protected-access
      run_record.latest_config(base), controlnet_pipeline.ARCHITECTURE)
  pipeline._overrides(  # pylint: disable=protected-access
      config, {**arch, "controlnet.hint_channels": (8, 16)})
  images = _pngs(str(tmp_path / "images"), 4, 8, 0)
  config.data.source = f"derived:edges:folder:{images}"
  config.data.batch_size = 2
  config.init_from.workdir = base
  config.optim.lr = 1e-3
  config.train.num_steps = 2
  config.train.checkpoint_every = 2
  config.train.log_every = 1
  config.sample.num = 2
  config.sample.batch_size = 2
  config.sample.steps = 2
  workdir = str(tmp_path / "train")
  jgen.run.main(config, workdir=workdir, compilation_cache=False)
  with Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False) as ckpt:
    trained = ckpt.restore(None)["params"]
  with Checkpointer(os.path.join(base, "checkpoints"), async_save=False) as ckpt:
    unet = ckpt.restore(None)["params"]["unet"]
  for k, v in rules_lib.flat(unet).items():
    np.testing.assert_array_equal(np.asarray(rules_lib.flat(trained["unet"])[k]), v, err_msg=k)
  control = rules_lib.flat(trained["control"])
  assert np.abs(np.asarray(control["zero_mid/kernel"])).max() > 0  # trained off zero
  moved = np.asarray(control["conv_in/kernel"]) - rules_lib.flat(unet)["conv_in/kernel"]
  assert np.abs(moved).max() < 5e-3  # the copy was loaded, then moved by two Adam steps
  assert os.path.isfile(os.path.join(workdir, "samples", "step_0000002.png"))

  converted = shutil.copytree(converted, str(tmp_path / "converted"))
  sample = run_record.latest_config(converted)
  sample.sample.source = _pngs(str(tmp_path / "conditions"), 3, 8, 1)
  sample.sample.prompts = "|".join(PROMPTS)
  sample.sample.steps = 2
  sample.sample.num = 3
  sample.sample.batch_size = 2
  jgen.run.main(sample, workdir=converted, mode="sample", compilation_cache=False)
  written = sorted(os.listdir(os.path.join(converted, "samples")))
  npz = [f for f in written if f.endswith("_user.npz")]
  assert npz, written
  out = np.load(os.path.join(converted, "samples", npz[0]))
  assert out["images"].shape == (3, 2, 8, 8, 3) and out["source"].shape == (3, 8, 8, 3)
