"""The flow configs build their models (shapes only, via `jax.eval_shape`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.train import load_method
from tests.conftest import load_experiment

# The full Glow CIFAR-10 model is built by test_glow_cifar_is_the_papers_model.
CASES = [("flow/glow_digits", None), ("flow/glow_digits", "additive"),
         ("flow/realnvp_digits", None)] + [
    (name, f"method={method}{suffix}") for name in ("flow/mnist", "flow/cifar")
    for method in ("glow", "realnvp") for suffix in ("", ",smoke")
    if (name, method, suffix) != ("flow/cifar", "glow", "")]


def build(name, arg):
  config = load_experiment(name, arg)
  method = load_method(config)
  size, ch = config.data.image_size, config.data.channels
  batch = {"image": jax.ShapeDtypeStruct((8, size, size, ch), jnp.float32)}
  state = jax.eval_shape(method.init, jax.random.key(0), batch)
  return config, method, state


def check_shapes(config, method, state):
  size, ch = config.data.image_size, config.data.channels
  assert sum(np.prod(s) for s in method.latent_shapes()) == size * size * ch
  images = jax.eval_shape(lambda s, r: method.sample(s, r, 4), state, jax.random.key(1))
  assert images.shape == (4, size, size, ch)
  assert method.temperature == config.sample.temperature == 0.7


@pytest.mark.parametrize("name,arg", CASES)
def test_config_builds(name, arg):
  check_shapes(*build(name, arg))


def test_glow_cifar_is_the_papers_model():
  config, method, state = build("flow/cifar", "method=glow")  # (its shapes: method=glow,smoke)
  model = method.model
  assert (model.num_levels, model.num_steps, model.hidden) == (3, 32, 512)
  assert model.coupling == "affine" and model.learn_top_prior and not model.lu
  assert config.data.batch_size == 512 and config.optim.lr == 1e-3
  assert method.n_bits == 8 and method.preprocessing == "center"
  params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
  assert 43e6 < params < 45e6  # 44.0M


def test_mnist_flows_run_on_28x28():
  config, method, _ = build("flow/mnist", "method=glow")
  assert config.data.image_size == 28 and not config.data.resize
  assert method.latent_shapes() == ((14, 14, 2), (7, 7, 8))


def test_arguments_are_checked():
  assert load_experiment("flow/mnist").method == "flow.glow"  # the default
  with pytest.raises(ValueError, match="unknown config argument 'tiny'"):
    load_experiment("flow/cifar", "method=glow,tiny")
  with pytest.raises(ValueError, match="glow only"):
    load_experiment("flow/cifar", "method=realnvp,additive")
  with pytest.raises(ValueError, match="unknown config argument 'big'"):
    load_experiment("flow/glow_digits", "big")
  config = load_experiment("flow/glow_digits", "smoke")
  config.model.dtype = "bfloat16"
  with pytest.raises(ValueError, match="float32"):
    load_method(config)
