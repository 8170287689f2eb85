"""RealNVP and Glow through the whole loop on their smoke configs: train (with an eval),
checkpoint, `--mode=eval`, `--mode=sample`; then exact encode/decode and sampling with the
trained state. One test per model, so that pytest-xdist workers train each model once."""

import dataclasses
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgen.run
from jgen.train import load_method
from jgen.train.inputs import load_data
from tests.conftest import checkpoint_steps, load_experiment


def holdout(config, n: int) -> jax.Array:
  source = load_data(config, split=config.data.eval_split)
  images = np.stack([source[i]["image"] for i in range(n)]).astype(np.float32)
  return jnp.asarray(images / np.float32(127.5) - np.float32(1.0))


@pytest.mark.parametrize("name", ["glow_digits", "realnvp_digits"])
def test_train_eval_sample_encode_decode(tmp_path, name):
  config = load_experiment(f"flow/{name}", "smoke")
  workdir = str(tmp_path)
  state = jgen.run.main(config, workdir=workdir, mode="train")
  assert int(state.step) == config.train.num_steps == 4
  assert checkpoint_steps(workdir) == [4]
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))
  assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state.params),
                                                      jax.tree.leaves(state.ema_params)))

  # --mode=eval: held-out bits/dim of the checkpoint (8-bit data: a few bits per dimension).
  scalars = jgen.run.main(config, workdir=workdir, mode="eval")
  assert scalars["step"] == 4 and 0.5 < scalars["bpd"] < 12.0
  np.testing.assert_allclose(scalars["nll"], scalars["bpd"] * 64 * math.log(2), rtol=1e-5)

  # --mode=sample: a grid and uint8 images at the config's temperature.
  paths = jgen.run.main(config, workdir=workdir, mode="sample")
  assert paths["png"].endswith("_t0.7.png") and os.path.getsize(paths["png"]) > 0
  images = np.load(paths["npz"])["images"]
  assert images.shape == (8, 8, 8, 1) and images.dtype == np.uint8
  assert images.std() > 0

  method = load_method(config)
  x = holdout(config, 8)
  params, consts = state.ema_params, state.model_state

  cold = dataclasses.replace(method, temperature=0.0)

  @jax.jit
  def run(state, x, rng):
    p, c = state.ema_params, state.model_state
    return method.decode(p, c, method.encode(p, c, x, rng)), cold.sample(state, rng, 2)

  roundtrip, cold_images = run(state, x, jax.random.key(3))
  # Exact encode/decode: the same 8-bit images back from the dequantized (noisy) inputs.
  levels = np.round((np.asarray(x) + 1) * 127.5)
  np.testing.assert_array_equal(np.round((np.asarray(roundtrip) + 1) * 127.5), levels)
  # Temperature 0 decodes the latents' means: every sample is the same image.
  np.testing.assert_array_equal(cold_images[0], cold_images[1])

  # Latents and images of shapes the model was not built for.
  wrong = [jnp.zeros((2, *s[:-1], s[-1] + 1)) for s in method.latent_shapes()]
  with pytest.raises(ValueError, match="built for images of shape"):
    method.decode(params, consts, wrong)
  with pytest.raises(ValueError, match="built for images of shape"):
    method.encode(params, consts, jnp.zeros((2, 16, 16, 1)))
