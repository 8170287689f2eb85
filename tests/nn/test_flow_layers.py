"""Every invertible layer: inverse(forward(x)) == x, and its log-det against the log|det J| of the
Jacobian from `jax.jacfwd`, on small inputs with perturbed (non-identity) parameters."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.nn import flow_layers as fl


def key(seed: int) -> jax.Array:
  """A PRNG key of the 'rbg' implementation: XLA compiles its random bits far faster than
  threefry's on CPU, and the initializers of every layer draw random bits."""
  return jax.random.key(seed, impl="rbg")


def random_variables(module: nn.Module, x: jax.Array, seed: int = 1) -> dict:
  """Random, well-conditioned, non-identity variables of `module` for inputs like `x`.

  The shapes come from `jax.eval_shape` of `init` (nothing is compiled; compiling the random
  initializers of a whole flow takes longer on CPU than the tests themselves); the values are
  NumPy draws: convolution kernels N(0, 0.5^2 / fan_in) (the zero-initialized last layers
  included, so no coupling is the identity), an invertible 1x1 weight near a random rotation,
  a random permutation and signs for the LU constants, and N(0, 0.05^2) for everything else
  (biases, ActNorm and prior log-scales, L and U). ActNorm's data-dependent initialization is
  tested on its own.
  """
  shapes = jax.eval_shape(lambda v: module.init(key(0), v, method="forward"), x)
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name, shape = path[-1].key, leaf.shape
    if name == "perm":
      value = np.eye(shape[0])[rng.permutation(shape[0])]
    elif name == "sign_s":
      value = rng.choice([-1.0, 1.0], shape)
    elif name == "kernel" and len(shape) == 2:  # InvConv1x1(lu=False)
      q, _ = np.linalg.qr(rng.standard_normal(shape))
      value = q + 0.05 * rng.standard_normal(shape)
    elif name == "kernel":
      value = rng.standard_normal(shape) * 0.5 / np.sqrt(np.prod(shape[:-1]))
    else:
      value = 0.05 * rng.standard_normal(shape)
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def jacobian(fn, x: jax.Array) -> jax.Array:
  """`[B, D_out, D_in]`: the Jacobian of `fn` at each example of the batch `x` (`jax.jacfwd`)."""
  def single(xi):
    return fn(xi[None])[0].reshape(-1)

  jac = jax.vmap(jax.jacfwd(single))(x)
  return jac.reshape(x.shape[0], -1, int(np.prod(x.shape[1:])))


def slogdet64(jac) -> np.ndarray:
  sign, logdet = np.linalg.slogdet(np.asarray(jac, np.float64))
  assert np.all(sign != 0)
  return logdet


def check_layer(layer: nn.Module, x: jax.Array, seed: int = 1):
  """Round trip, log-det vs jacfwd, and the reverse pass's log-det (one compiled function)."""
  variables = random_variables(layer, x, seed)

  @jax.jit
  def run(variables, x):
    z, logdet = layer.apply(variables, x, method="forward")
    x_back, logdet_rev = layer.apply(variables, z, reverse=True)
    x_inv = layer.apply(variables, z, method="inverse")
    jac = jacobian(lambda v: layer.apply(variables, v, method="forward")[0], x)
    return z, logdet, x_back, logdet_rev, x_inv, jac

  z, logdet, x_back, logdet_rev, x_inv, jac = run(variables, x)
  assert logdet.shape == (x.shape[0],) and logdet.dtype == jnp.float32
  np.testing.assert_allclose(x_back, x, atol=1e-4)
  np.testing.assert_allclose(x_inv, x_back)
  np.testing.assert_allclose(logdet_rev, -logdet, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(logdet, slogdet64(jac), rtol=1e-4, atol=2e-4)
  return variables, z


def init_and_forward(layer: nn.Module, x: jax.Array, seed: int = 0):
  """`forward(x)` right after `init` on `x` (both jitted): the layer as initialized."""
  @jax.jit
  def run(x):
    variables = layer.init(key(seed), x, method="forward")
    return layer.apply(variables, x, method="forward")

  return run(x)


def data(shape, seed=0, batch=3):
  """Non-standardized inputs (offset and scaled per channel), so ActNorm has work to do."""
  k1, k2, k3 = jax.random.split(key(seed), 3)
  c = shape[-1]
  return (jax.random.normal(k1, (batch, *shape)) * jax.random.uniform(k2, (c,), minval=0.5,
                                                                      maxval=2.0)
          + jax.random.normal(k3, (c,)))


def checkerboard(parity):
  def kept(x):
    return np.asarray(x) * np.asarray(fl.checkerboard_mask(x.shape[1], x.shape[2], parity))
  return kept


def channels(start, stop):
  return lambda x: np.asarray(x)[..., start:stop]


# name -> (layer, input shape, the part of the input a coupling keeps (and conditions on))
LAYERS = {
    "actnorm": (fl.ActNorm(), (4, 4, 3), None),
    "invconv_plain": (fl.InvConv1x1(lu=False), (2, 2, 6), None),
    "invconv_lu": (fl.InvConv1x1(lu=True), (2, 2, 6), None),
    "glow_affine_coupling": (fl.AffineCoupling(hidden=8, scale="sigmoid"), (2, 2, 4),
                             channels(0, 2)),
    "glow_affine_coupling_odd": (fl.AffineCoupling(hidden=8, scale="sigmoid", parity=1),
                                 (2, 2, 3), channels(1, 3)),
    "realnvp_checkerboard_0": (fl.AffineCoupling(mask="checkerboard", parity=0, hidden=8,
                                                 num_blocks=1, scale="tanh"), (4, 4, 1),
                               checkerboard(0)),
    "realnvp_checkerboard_1": (fl.AffineCoupling(mask="checkerboard", parity=1, hidden=8,
                                                 num_blocks=1, scale="tanh"), (4, 4, 3),
                               checkerboard(1)),
    "realnvp_channel_1": (fl.AffineCoupling(mask="channel", parity=1, hidden=8, num_blocks=1,
                                            scale="tanh"), (2, 2, 4), channels(2, 4)),
    "additive_channel": (fl.AdditiveCoupling(hidden=8), (2, 2, 4), channels(0, 2)),
    "additive_checkerboard": (fl.AdditiveCoupling(mask="checkerboard", parity=1, hidden=8),
                              (4, 4, 1), checkerboard(1)),
    "squeeze": (fl.Squeeze(), (4, 4, 2), None),
    "split_learned": (fl.Split(learned=True), (2, 2, 6), channels(0, 3)),
    "split_standard": (fl.Split(learned=False), (2, 2, 6), None),
    "learned_prior": (fl.LearnedPrior(), (2, 2, 3), None),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_inverts_and_logdet_matches_jacobian(name):
  layer, shape, kept = LAYERS[name]
  x = data(shape)
  _, z = check_layer(layer, x)
  if kept is not None:  # couplings and splits pass their conditioning part through unchanged
    np.testing.assert_array_equal(kept(z), kept(x))
    assert np.abs(z - x).max() > 1e-2


def test_glow_coupling_starts_near_identity_scale():
  """Zero-initialized last layer: shift 0 and scale sigmoid(2) everywhere at init."""
  x = data((2, 2, 4))
  layer = fl.AffineCoupling(hidden=8, scale="sigmoid")
  z, logdet = init_and_forward(layer, x)
  s = jax.nn.sigmoid(2.0)
  np.testing.assert_allclose(z[..., 2:], x[..., 2:] * s, rtol=1e-6)
  np.testing.assert_allclose(logdet, np.full(3, 2 * 2 * 2 * np.log(s)), rtol=1e-6)


def test_actnorm_data_dependent_init_standardizes_each_channel():
  x = data((5, 5, 3), batch=16)
  assert np.abs(np.asarray(x).mean(axis=(0, 1, 2))).max() > 0.1  # the data need standardizing
  layer = fl.ActNorm()
  variables = layer.init(key(0), x, method="forward")
  z, logdet = init_and_forward(layer, x)
  np.testing.assert_allclose(z.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
  np.testing.assert_allclose(z.std(axis=(0, 1, 2)), 1.0, rtol=1e-4)
  std = np.asarray(x, np.float64).std(axis=(0, 1, 2))
  np.testing.assert_allclose(logdet, np.full(16, -25 * np.log(std).sum()), rtol=1e-4)
  # Applied later to other data, the parameters stay those of the init batch.
  z2, _ = layer.apply(variables, 2.0 * x, method="forward")
  np.testing.assert_allclose(z2.std(axis=(0, 1, 2)), 2.0, rtol=1e-3)


def test_lu_invconv_weight_is_its_factorization():
  layer = fl.InvConv1x1(lu=True)
  x = data((2, 2, 5))
  variables = random_variables(layer, x)
  # Only L, U and log|s| are trained; the permutation and the signs of s are constants.
  assert set(variables["params"]) == {"lower", "upper", "log_s"}
  assert set(variables["constants"]) == {"perm", "sign_s"}
  p, c = variables["params"], variables["constants"]
  perm = np.asarray(c["perm"])
  np.testing.assert_array_equal(np.sort(perm, axis=0)[:-1], 0.0)  # a permutation matrix
  np.testing.assert_array_equal(perm.sum(0), 1.0)
  lower = np.tril(p["lower"], -1) + np.eye(5)
  upper = np.triu(p["upper"], 1) + np.diag(c["sign_s"] * np.exp(p["log_s"]))
  w = perm @ lower @ upper
  z, logdet = layer.apply(variables, x, method="forward")
  np.testing.assert_allclose(z, np.asarray(x) @ w.T, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(logdet, 4 * np.linalg.slogdet(w)[1], rtol=1e-5, atol=1e-5)


def test_invconv_starts_as_a_rotation():
  x = data((2, 2, 4))
  for lu in (False, True):
    z, logdet = init_and_forward(fl.InvConv1x1(lu=lu), x)
    np.testing.assert_allclose(logdet, 0.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(z, axis=-1), np.linalg.norm(x, axis=-1),
                               rtol=1e-5)


def test_squeeze_moves_each_2x2_patch_into_channels():
  x = jnp.arange(2 * 4 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 4, 3)
  y = fl.squeeze(x)
  assert y.shape == (2, 2, 2, 12)
  np.testing.assert_array_equal(y[0, 1, 0].reshape(2, 2, 3), x[0, 2:4, 0:2])
  np.testing.assert_array_equal(fl.unsqueeze(y), x)
  with pytest.raises(ValueError, match="even"):
    fl.squeeze(x[:, :3])


def test_channel_mask_needs_two_channels():
  layer = fl.AffineCoupling(hidden=4)
  with pytest.raises(ValueError, match="at least 2 channels"):
    layer.init(key(0), jnp.zeros((1, 2, 2, 1)), method="forward")
  with pytest.raises(ValueError, match="coupling scale"):
    fl.AffineCoupling(scale="exp").init(key(0), jnp.zeros((1, 2, 2, 2)),
                                        method="forward")
