"""The MNIST-format and CIFAR-10 autoencoder configs build their models (shapes only)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.train import load_method
from jgen.train.sampling import method_sampler
from tests.conftest import load_experiment

CASES = [(name, f"method={method}") for name in ("autoencoder/mnist", "autoencoder/cifar")
         for method in ("ae", "dae", "vae", "vqvae")]


@pytest.mark.parametrize("name,method", CASES)
def test_config_builds(tmp_path, name, method):
  config = load_experiment(name, method)
  shape = (28, 28) if name == "autoencoder/mnist" else (32, 32, 3)
  path = tmp_path / "data.npz"
  rng = np.random.default_rng(0)
  np.savez(path, images=rng.integers(0, 256, (40, *shape), dtype=np.uint8),
           labels=rng.integers(0, 10, 40))
  config.data.source = f"npz:{path}"
  m = load_method(config)
  size, ch = config.data.image_size, config.data.channels
  batch = {"image": jax.ShapeDtypeStruct((config.data.batch_size, size, size, ch), jnp.float32)}
  state = jax.eval_shape(m.init, jax.random.key(0), batch)
  assert sum(np.prod(x.shape) for x in jax.tree.leaves(state.params)) > 0
  images = jax.eval_shape(lambda s, r: method_sampler(m).fn(s, r, 8), state, jax.random.key(1))
  assert images.shape[1:] == (size, size, ch)


def test_the_method_is_a_checked_argument():
  assert load_experiment("autoencoder/mnist").method == "autoencoder.vae"  # the default
  with pytest.raises(ValueError, match="method is one of vae, ae, dae, vqvae"):
    load_experiment("autoencoder/mnist", "method=gan")
