"""Image-conditioned latent diffusion (`diffusion.ldm_image`): the inpainting and
super-resolution conditions against NumPy, the mask carried by NaN sources, the known pixels
kept, a smoke run through the loop with resume on a vqgan_digits:smoke first stage, the
translation grids of --mode=sample, and every new config builds."""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgen.run
from jgen import data as jdata
from jgen.data.derived import center_mask
from jgen.diffusion import ldm, ldm_image
from jgen.train import init_from as init_from_lib
from jgen.train import load_method
from jgen.train.config import check_config_keys
from tests.conftest import checkpoint_steps, load_experiment

NEW_CONFIGS = {"ldm/inpaint_digits": ("smoke", None), "ldm/sr_mnist": ("smoke", None),
               "ldm/cifar": ("smoke", None), "ldm/celebahq": ("smoke", None),
               "first_stage/vqgan_mnist": ("smoke", None),
               "first_stage/vqgan_cifar": ("smoke", None),
               "first_stage/vqgan_celebahq": ("smoke", None)}


def _config(fs_workdir, name="ldm/inpaint_digits"):
  config = load_experiment(name, "smoke")
  config.init_from.workdir = fs_workdir
  return config


@pytest.fixture(scope="module")
def inpaint_run(tmp_path_factory, fs_run):
  """(config, workdir, state) of :smoke trained 2 steps, then resumed to 4 with any
  re-measurement of the scale factor giving 123; and the factor recorded at step 2."""
  workdir = str(tmp_path_factory.mktemp("inpaint"))
  config = _config(fs_run)
  config.train.num_steps = 2
  config.train.eval_every = 0
  first = jgen.run.main(config, workdir=workdir)
  assert checkpoint_steps(workdir) == [2]
  recorded = np.asarray(first.model_state["scale_factor"])
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(ldm, "measure_scale_factor", lambda z: jnp.asarray(123.0, jnp.float32))
    config = _config(fs_run)
    config.train.eval_every = 0
    state = jgen.run.main(config, workdir=workdir)
  return config, workdir, state, recorded


def _held_out(config, n):
  d = config.data
  src = jdata.load_source(d.source, split=d.eval_split, image_size=d.image_size,
                          channels=d.channels, resize=d.resize, seed=config.seed)
  return {k: jnp.asarray(v) for k, v in jdata.read_batch(src, range(n)).items()}


def _block_mean(x, size):
  b, h, w, c = x.shape
  out = np.zeros((b, size, size, c))
  k = h // size
  for i in range(size):
    for j in range(size):
      out[:, i, j] = np.asarray(x, np.float64)[:, i * k:(i + 1) * k, j * k:(j + 1) * k].mean(
          axis=(1, 2))
  return out


def test_area_downsample_is_the_block_mean():
  x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
  np.testing.assert_allclose(ldm_image.area_downsample(jnp.asarray(x), 4), _block_mean(x, 4),
                             atol=1e-6)
  with pytest.raises(ValueError, match="multiple of the latent size"):
    ldm_image.area_downsample(jnp.zeros((1, 6, 6, 1)), 4)


def test_nan_sources_carry_the_mask_and_plain_images_get_the_centre():
  rng = np.random.default_rng(1)
  image = rng.uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
  mask = np.zeros((2, 8, 8, 1), np.float32)
  mask[0, 1:4, 2:7] = 1
  mask[1, 5:8, 0:3] = 1
  got_image, got_mask = ldm_image.source_mask(ldm_image.masked_source(jnp.asarray(image),
                                                                      jnp.asarray(mask)))
  np.testing.assert_array_equal(got_mask, mask)
  np.testing.assert_array_equal(got_image, np.where(mask > 0, 0.0, image))
  _, plain = ldm_image.source_mask(jnp.asarray(image))
  np.testing.assert_array_equal(plain, np.broadcast_to(center_mask(8, 8), (2, 8, 8, 1)))


def test_conditions_against_numpy(fs_run, inpaint_run):
  config, _, state, _ = inpaint_run
  method = load_method(config)
  batch = _held_out(config, 6)
  cond = method.batch_condition(state.frozen, state.model_state, batch)
  r, z = method.latent_shape[0], method.latent_shape[2]
  assert cond.shape == (6, r, r, z + 1) and method.ddpm.model.cond_channels == z + 1
  # The mask channel: the fraction of masked pixels of each f x f cell (NumPy block mean).
  mask = np.asarray(batch["mask"])
  np.testing.assert_allclose(cond[..., -1:], _block_mean(mask, r), atol=1e-6)
  # The latent channels: s * E((1 - m) x), the masked image built in NumPy, VQ codes snapped
  # by hand to the checkpoint's codebook.
  ae, _ = init_from_lib.load(init_from_lib.InitFrom(fs_run, subtree="autoencoder"))
  masked = (1.0 - mask) * np.asarray(batch["target"])
  h = np.asarray(method.latent.first_stage.encoder.apply({"params": ae["encoder"]},
                                                         jnp.asarray(masked), train=False))
  book = np.asarray(ae["codebook"], np.float64)
  flat = h.reshape(-1, book.shape[1])
  codes = book[np.argmin(((flat[:, None] - book[None]) ** 2).sum(-1), axis=-1)].reshape(h.shape)
  np.testing.assert_allclose(cond[..., :z], codes * float(state.model_state["scale_factor"]),
                             atol=1e-5)

  # Super-resolution: 2x SR at f = 2 gives the low-resolution image itself (the mean of each
  # 2 x 2 block of the derived source, rounded to uint8 by the source) at the latent size.
  sr = _config(fs_run, "ldm/sr_mnist")
  sr_method = load_method(sr)
  assert sr_method.ddpm.model.cond_channels == 1
  sr_batch = _held_out(sr, 4)
  low = sr_method.sr_condition(sr_batch["source"])
  target = np.round((np.asarray(sr_batch["target"], np.float64) + 1) * 127.5)  # the uint8s
  lr_numpy = np.rint(_block_mean(target, 4)) / 127.5 - 1
  assert low.shape == (4, 4, 4, 1)
  np.testing.assert_allclose(low, lr_numpy, atol=1e-6)


def test_known_pixels_kept_and_the_reconstruction_error_bound(inpaint_run):
  """Pasting keeps every unmasked pixel exactly; inside the mask the image is the decoder's.
  (Without pasting, how far the decoded unmasked pixels are from the original, against the
  first stage's own reconstruction error, is measured on the trained digits run by
  benchmarks/inpaint_digits.py: 4.65x the reconstruction MSE after 2,500 steps.)"""
  config, _, state, _ = inpaint_run
  method = load_method(config)
  batch = _held_out(config, 8)
  image, mask = batch["target"], batch["mask"]
  pasted, decoded = jax.jit(method.inpaint)(state, jax.random.key(0), image, mask)
  known = np.asarray(mask) == 0
  np.testing.assert_array_equal(np.asarray(pasted)[np.broadcast_to(known, image.shape)],
                                np.asarray(image)[np.broadcast_to(known, image.shape)])
  np.testing.assert_allclose(np.asarray(pasted)[~np.broadcast_to(known, image.shape)],
                             np.asarray(decoded)[~np.broadcast_to(known, image.shape)])
  assert np.all(np.abs(np.asarray(decoded)) <= 1.0)


@pytest.mark.slow  # 34 s on 2 cores beyond the fixture; the fixture already resumes
def test_loop_smoke_resume_eval_and_translation_grids(fs_run, inpaint_run, tmp_path):
  config, workdir, state, recorded = inpaint_run
  config = copy.deepcopy(config)  # this test changes its sample/data/ldm fields; the next reads
  assert int(state.step) == config.train.num_steps == 4
  # Resumed with measure_scale_factor patched to 123: the recorded factor is kept, bitwise.
  assert float(recorded) != 123.0
  np.testing.assert_array_equal(np.asarray(state.model_state["scale_factor"]), recorded)
  # Stage 2 never changes stage 1; only the U-Net trains.
  ae, _ = init_from_lib.load(init_from_lib.InitFrom(fs_run, subtree="autoencoder"))
  for a, b in zip(jax.tree.leaves(state.frozen[ldm.FROZEN]), jax.tree.leaves(ae), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert set(state.params["params"]) >= {"conv_in", "conv_out"}
  assert state.params["params"]["conv_in"]["kernel"].shape[2] == 4 + 4 + 1  # z + cond

  # The grid the run wrote at its end (held-out condition | sample | original).
  saved = np.load(f"{workdir}/samples/step_0000004.npz")
  n = config.sample.num
  assert saved["source"].shape == (n, 8, 8, 1) and saved["images"].shape == (n, 1, 8, 8, 1)
  held = _held_out(config, n)
  np.testing.assert_array_equal(saved["target"][:, 0], np.asarray(
      np.round((np.asarray(held["target"]) + 1) * 127.5), np.uint8))
  known = np.asarray(held["mask"]) == 0
  # The known pixels of the sample are the original's; the unknown ones are shown black.
  np.testing.assert_array_equal(saved["images"][:, 0][known], saved["target"][:, 0][known])
  assert np.all(saved["source"][~known] == 0)
  held_batch = {k: v for k, v in held.items()}
  metrics = jax.jit(load_method(config).evaluate)(state, held_batch, jax.random.key(0))
  assert 0.0 < float(metrics["loss"]) < 10.0

  # A folder of one's own images: inpainted in the centre.
  folder = tmp_path / "mine"
  folder.mkdir()
  from PIL import Image  # pylint: disable=import-outside-toplevel
  for i in range(3):
    Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(folder / f"{i}.png")
  config.sample.source = str(folder)
  paths = jgen.run.main(config, workdir=workdir, mode="sample")
  saved = np.load(paths["npz"])
  assert saved["images"].shape == (3, 1, 8, 8, 1) and paths["png"].endswith("_user.png")
  assert "ldm_inpaint_ddim5" in paths["png"]
  outside = center_mask(8, 8)[..., 0] == 0
  np.testing.assert_array_equal(saved["images"][:, 0, outside, 0],
                                saved["source"][:, outside, 0])


def test_clear_errors(fs_run):
  config = _config(fs_run)
  config.data.source = "digits"
  with pytest.raises(ValueError, match="derived:mask:"):
    load_method(config)
  config = _config(fs_run)
  config.ldm.task = "colorize"
  with pytest.raises(ValueError, match="ldm.task"):
    load_method(config)
  config = _config(fs_run)
  config.sample.guidance_scale = 3.0
  with pytest.raises(ValueError, match="cond_drop_prob"):
    load_method(config)
  with pytest.raises(ValueError, match="init_from.workdir is empty"):
    load_method(_config(""))


@pytest.mark.parametrize("name", sorted(NEW_CONFIGS))
def test_new_configs_build(name):
  for arg in NEW_CONFIGS[name]:
    config = load_experiment(name, arg)
    check_config_keys(config)
    assert config.method in ("diffusion.ldm_image", "diffusion.ldm", "autoencoder.first_stage")


@pytest.mark.slow
def test_eval_mode_reports_translation_metrics(inpaint_run):
  config, workdir, _, _ = inpaint_run
  result = jgen.run.main(config, workdir=workdir, mode="eval")
  assert 0.0 < result["loss"] < 10.0 and np.isfinite(result["translation/psnr"])
