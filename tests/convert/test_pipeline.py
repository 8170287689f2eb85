"""Whole checkpoints into work directories (`jgen.convert.pipeline`), against diffusers' images.

Fixture: `benchmarks/sd_pipeline_reference.py`, a tiny random `StableDiffusionPipeline` (its
folder, the same weights as a single SD 1.x file, and the images diffusers draws from fixed
latents: 2 DDIM steps, guidance 5, two prompts and a negative prompt). Tolerance on the images
(in [0, 1]): 2e-5; the conversion itself is exact (the same float32 weights) and the two
frameworks' float32 arithmetic differs by ~1e-6 through U-Net, text encoder and decoder.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.convert import files, pipeline
from jgen.convert.common import flatten_tree
from jgen.train import run_record
from jgen.train.checkpoint import Checkpointer
from jgen.train.inference import restore_for_inference
from jgen.train.method import load_method

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
PIPELINE = os.path.join(FIXTURES, "sd_pipeline")
SINGLE = os.path.join(FIXTURES, "sd_pipeline_single.safetensors")
PROMPTS = ("a photo of a cat", "an astronaut riding a horse, oil painting")
NEGATIVE = ("", "blurry")
# What a single file cannot tell about the tiny pipeline (real SD files need none of it).
TINY = {"unet": {"attention_head_dim": 2, "norm_num_groups": 4},
        "vae": {"norm_num_groups": 4}, "text_encoder": {"head_dim": 8}}


@pytest.fixture(scope="module")
def ref():
  return np.load(os.path.join(FIXTURES, "sd_pipeline.npz"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("sd") / "run")
  result = pipeline.convert(PIPELINE, path)
  assert result["format"] == "sd_folder" and result["method"] == "diffusion.stable_diffusion"
  return path


def _config(workdir, **sample):
  config = run_record.latest_config(workdir)
  config.sample.prompts = "|".join(PROMPTS)
  config.sample.steps = 2
  for k, v in sample.items():
    config.sample[k] = v
  return config


def test_folder_images_equal_diffusers(workdir, ref):
  method, _, state = restore_for_inference(_config(workdir), workdir)
  tokenizer_ids = np.concatenate([method.prompts, method.negative[None]])
  assert (tokenizer_ids[:2] == ref["ids"][:2]).all() and (method.negative == ref["ids"][2]).all()
  context = method.context(state.frozen, jnp.asarray(ref["ids"]))
  assert np.abs(np.asarray(context) - ref["context"]).max() < 1e-5
  x_t = jnp.asarray(ref["latents"].transpose(0, 2, 3, 1))
  images = method.sample_tokens(state, jax.random.key(0), jnp.asarray(ref["ids"][:2]),
                                jnp.asarray(ref["ids"][2:]), guidance_scale=5.0, x_T=x_t)
  got = (np.asarray(images) + 1) / 2
  assert np.abs(got - ref["images"]).max() < 2e-5


def test_single_file_converts_to_the_folder_weights(workdir, tmp_path):
  other = str(tmp_path / "single")
  pipeline.convert(SINGLE, other, overrides=TINY)

  def leaves(path):
    config = run_record.latest_config(path)
    with Checkpointer(os.path.join(path, "checkpoints"), async_save=False) as ckpt:
      items = ckpt.restore(None)
    del config
    return flatten_tree({"params": items["params"], "frozen": items["frozen"]})
  a, b = leaves(workdir), leaves(other)
  assert sorted(a) == sorted(b)
  for k in a:
    np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


def test_converted_model_samples_through_the_loop(workdir):
  config = _config(workdir, num=2, batch_size=2)
  method = load_method(config)
  assert method.num_classes == 2
  _, _, state = restore_for_inference(config, workdir)
  images = jax.jit(method.sample, static_argnums=2)(state, jax.random.key(1), 2)
  assert images.shape == (2, 8, 8, 3) and bool(jnp.all(jnp.isfinite(images)))


def test_prediction_and_bad_input(tmp_path):
  with pytest.raises(files.UnknownFormatError, match="Known"):
    pipeline.convert(FIXTURES, str(tmp_path / "x"))
  with pytest.raises(FileNotFoundError):
    pipeline.convert(str(tmp_path / "missing.ckpt"), str(tmp_path / "y"))
  with pytest.raises(ValueError, match="prediction"):
    pipeline.convert(PIPELINE, str(tmp_path / "z"), prediction="score")
  path = str(tmp_path / "v")
  pipeline.convert(SINGLE, path, overrides=TINY, prediction="v")
  assert run_record.latest_config(path).diffusion.prediction == "v"
  with pytest.raises(FileExistsError):
    pipeline.convert(SINGLE, path, overrides=TINY)


def test_ddpm_folder_converts_to_a_ddpm_cifar_run(tmp_path, ref_unet=None):
  path = str(tmp_path / "ddpm")
  result = pipeline.convert(os.path.join(FIXTURES, "unet_ddpm"), path)
  assert result["method"] == "diffusion.ddpm" and "ddpm/cifar.py" in result["config"]
  config = run_record.latest_config(path)
  method, _, state = restore_for_inference(config, path)
  ref = np.load(os.path.join(FIXTURES, "unet.npz"))
  out = method.model.apply(state.ema_params, jnp.asarray(ref["ddpm_x"].transpose(0, 2, 3, 1)),
                           jnp.asarray(ref["ddpm_t"]), None, train=False)
  assert np.abs(np.asarray(out).transpose(0, 3, 1, 2) - ref["ddpm_out"]).max() < 1e-5
