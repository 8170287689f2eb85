"""Whole multi-scale flows (RealNVP, Glow): exact inverse, log-det against `jax.jacfwd`, latent
shapes, and the errors for shapes the model was not built for."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.flow import Glow, RealNVP
from tests.nn.test_flow_layers import data, jacobian, key, random_variables, slogdet64

MODELS = {
    "glow_affine_lu_rgb": Glow(image_shape=(4, 4, 3), num_levels=2, num_steps=1, hidden=8),
    "glow_additive_plain_gray": Glow(image_shape=(4, 4, 1), num_levels=2, num_steps=1,
                                     hidden=8, coupling="additive", lu=False,
                                     learn_top_prior=False),
    "realnvp_gray": RealNVP(image_shape=(4, 4, 1), num_levels=2, hidden=8, num_blocks=0),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_inverts_and_logdet_matches_jacobian(name):
  model = MODELS[name]
  x = data(model.image_shape, batch=2)
  variables = random_variables(model, x)

  def flat(v):
    latents, _ = model.apply(variables, v, method="forward")
    return jnp.concatenate([z.reshape(z.shape[0], -1) for z in latents], axis=-1)

  @jax.jit
  def run(variables, x):
    latents, logdet = model.apply(variables, x, method="forward")
    x_back = model.apply(variables, latents, method="inverse")
    return latents, logdet, x_back, jacobian(flat, x)

  latents, logdet, x_back, jac = run(variables, x)
  assert tuple(z.shape[1:] for z in latents) == model.latent_shapes()
  np.testing.assert_allclose(x_back, x, atol=1e-4)
  np.testing.assert_allclose(logdet, slogdet64(jac), rtol=1e-4, atol=1e-3)
  assert np.abs(logdet).min() > 0.1  # a map with a non-trivial volume change


def test_latent_shapes_cover_every_dimension():
  glow = Glow(image_shape=(32, 32, 3), num_levels=3, num_steps=1, hidden=4)
  assert glow.latent_shapes() == ((16, 16, 6), (8, 8, 12), (4, 4, 48))
  realnvp = RealNVP(image_shape=(32, 32, 3), num_levels=3, hidden=4, num_blocks=1)
  assert realnvp.latent_shapes() == ((16, 16, 6), (8, 8, 12), (8, 8, 12))
  # MNIST's 28 x 28 with two squeezes (28 -> 14 -> 7).
  mnist = Glow(image_shape=(28, 28, 1), num_levels=2, num_steps=1, hidden=4)
  assert mnist.latent_shapes() == ((14, 14, 2), (7, 7, 8))
  latents = jax.eval_shape(lambda x: mnist.init_with_output(key(0), x, method="forward")[0][0],
                           jax.ShapeDtypeStruct((2, 28, 28, 1), jnp.float32))
  assert tuple(z.shape for z in latents) == ((2, 14, 14, 2), (2, 7, 7, 8))
  for model in (glow, realnvp, mnist):
    size = np.prod(model.image_shape)
    assert sum(np.prod(s) for s in model.latent_shapes()) == size


def test_shapes_the_model_was_not_built_for_raise():
  model = MODELS["glow_affine_lu_rgb"]
  variables = random_variables(model, data(model.image_shape, batch=2))
  latents = [jnp.zeros((2, *s)) for s in model.latent_shapes()]
  with pytest.raises(ValueError, match=r"built for images of shape \(4, 4, 3\)"):
    model.apply(variables, jnp.zeros((2, 8, 8, 3)), method="forward")
  with pytest.raises(ValueError, match=r"inverts latents of shapes"):
    model.apply(variables, [jnp.zeros((2, 4, 4, 6)), jnp.zeros((2, 2, 2, 24))],
                method="inverse")
  with pytest.raises(ValueError, match=r"inverts latents of shapes"):
    model.apply(variables, latents[:1], method="inverse")  # a latent missing
  with pytest.raises(ValueError, match=r"inverts latents of shapes"):
    model.apply(variables, (latents[0], latents[1][:1]), method="inverse")  # batch sizes differ
  with pytest.raises(ValueError, match="multiples of 4"):
    Glow(image_shape=(6, 6, 1), num_levels=2, num_steps=1, hidden=4).init(
        key(0), jnp.zeros((1, 6, 6, 1)), method="forward")
  with pytest.raises(ValueError, match="coupling"):
    Glow(image_shape=(4, 4, 1), num_levels=1, num_steps=1, hidden=4, coupling="exp").init(
        key(0), jnp.zeros((1, 4, 4, 1)), method="forward")
