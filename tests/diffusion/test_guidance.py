"""Classifier-free guidance: w = 0 / 1 limits, the formula, one batched forward, inside samplers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.diffusion import ddim_sample, dpmpp_2m_sample, euler_sample, make_schedule
from jgen.diffusion import linear_beta_schedule
from jgen.diffusion.guidance import cfg_eps_fn, chained_cfg_eps_fn, concat_conditions
from jgen.nn.conditioning import null_conditions
from jgen.nn.unet import UNet

K = 3  # classes; label K is the null class


class CountingEps:
  """A Python eps(x, t, conditions) that is affine in x and depends on the label; counts calls."""

  def __init__(self):
    self.calls, self.batches = 0, []

  def __call__(self, x, t, conditions):
    self.calls += 1
    self.batches.append(x.shape[0])
    label = conditions["label"].astype(jnp.float32).reshape(-1, 1, 1, 1)
    tt = jnp.asarray(t, jnp.float32).reshape(-1, 1, 1, 1)
    return 0.5 * x + 0.1 * label + 0.01 * tt


@pytest.fixture
def inputs():
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 4, 4, 1))
  t = jnp.array([0, 3, 7, 9], jnp.int32)
  cond = {"label": jnp.array([0, 1, 2, 1], jnp.int32)}
  return x, t, cond, null_conditions(cond, num_classes=K)


@pytest.mark.parametrize("w", [0.0, 1.0, jnp.float32(0.0), jnp.float32(1.0)])
def test_w0_is_unconditional_and_w1_conditional(inputs, w):
  x, t, cond, null = inputs
  f = CountingEps()
  got = cfg_eps_fn(f, cond, null, w)(x, t)
  want = f(x, t, null if float(w) == 0.0 else cond)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_formula_and_one_batched_forward(inputs):
  x, t, cond, null = inputs
  f = CountingEps()
  eps_c, eps_u = f(x, t, cond), f(x, t, null)
  f.calls, f.batches = 0, []
  got = cfg_eps_fn(f, cond, null, 3.0)(x, t)
  assert f.calls == 1 and f.batches == [8]  # [x, x] in one call
  np.testing.assert_allclose(got, eps_u + 3.0 * (eps_c - eps_u), rtol=1e-6, atol=1e-6)
  # The paper's (1 + w') eps_c - w' eps_u with w' = 2 is w = 3.
  np.testing.assert_allclose(got, 3.0 * eps_c - 2.0 * eps_u, rtol=1e-5, atol=1e-6)


def test_static_w_0_or_1_evaluates_one_half(inputs):
  x, t, cond, null = inputs
  for w in (0.0, 1.0):
    f = CountingEps()
    cfg_eps_fn(f, cond, null, w)(x, t)
    assert f.calls == 1 and f.batches == [4]


def test_concat_conditions_fills_the_null_flag(inputs):
  _, _, cond, null = inputs
  both = concat_conditions(cond, null)
  np.testing.assert_array_equal(both["label"], [0, 1, 2, 1, K, K, K, K])
  np.testing.assert_array_equal(both["null"], [False] * 4 + [True] * 4)
  with pytest.raises(ValueError, match="same keys"):
    concat_conditions(cond, {"context": jnp.zeros((4, 2, 3))})


@pytest.fixture(scope="module")
def unet():
  model = UNet(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), dropout=0.0,
               num_groups=4, num_classes=K)

  @jax.jit
  def init(rng):
    params = model.init(rng, jnp.zeros((1, 8, 8, 1)), jnp.zeros((1,), jnp.int32),
                        {"label": jnp.zeros((1,), jnp.int32)}, train=False)
    # DDPM zero-initializes the output conv: perturb every leaf so that labels change eps.
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(4), len(leaves))
    leaves = [p + 0.1 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)]
    return jax.tree.unflatten(treedef, leaves)

  return model, init(jax.random.PRNGKey(1))


def test_through_ddim_w0_equals_null_label_sampler(unet):
  model, params = unet
  schedule = make_schedule(linear_beta_schedule(50))
  eps_cond = lambda x, t, c: model.apply(params, x, t, c, train=False)
  cond = {"label": jnp.array([0, 1, 2, 0], jnp.int32)}
  null = null_conditions(cond, num_classes=K)
  rng, shape = jax.random.PRNGKey(2), (4, 8, 8, 1)
  sample = jax.jit(lambda eps_fn: ddim_sample(eps_fn, schedule, rng, shape, steps=5),
                   static_argnums=0)
  null_eps = lambda x, t: eps_cond(x, t, {"label": jnp.full((4,), K, jnp.int32)})
  want = sample(null_eps)
  # Static w = 0 evaluates the null half only: identical. A traced w = 0 takes the batched path.
  np.testing.assert_array_equal(sample(cfg_eps_fn(eps_cond, cond, null, 0.0)), want)
  batched = jax.jit(lambda w: ddim_sample(cfg_eps_fn(eps_cond, cond, null, w), schedule, rng,
                                          shape, steps=5))
  np.testing.assert_allclose(batched(jnp.float32(0.0)), want, atol=1e-5)
  cond_eps = lambda x, t: eps_cond(x, t, cond)
  np.testing.assert_allclose(batched(jnp.float32(1.0)), sample(cond_eps), atol=1e-5)
  guided = batched(jnp.float32(3.0))
  assert np.isfinite(guided).all() and not np.allclose(guided, want, atol=1e-3)


@pytest.mark.parametrize("solver", [dpmpp_2m_sample, euler_sample])
def test_runs_inside_the_solvers(unet, solver):
  model, params = unet
  schedule = make_schedule(linear_beta_schedule(50))
  eps_cond = lambda x, t, c: model.apply(params, x, t, c, train=False)
  cond = {"label": jnp.array([0, 1], jnp.int32)}
  eps_fn = cfg_eps_fn(eps_cond, cond, null_conditions(cond, num_classes=K), 2.0)
  out = jax.jit(lambda rng: solver(eps_fn, schedule, rng, (2, 8, 8, 1), steps=3))(
      jax.random.PRNGKey(3))
  assert out.shape == (2, 8, 8, 1) and np.isfinite(out).all()


def test_chained_guidance_is_face0s_separable_formula_in_one_pass():
  """eps = e(0,0) + s_id (e(id,0) - e(0,0)) + s_txt (e(id,txt) - e(id,0)), one batched call;
  with one scale it is `cfg_eps_fn`."""
  calls = []

  def eps_cond_fn(x, t, c):
    calls.append(x.shape[0])
    return x * c["a"][:, None] + t[:, None] * 0.01 + c["b"][:, None]

  x = jnp.arange(6.0).reshape(2, 3)
  t = jnp.array([1.0, 2.0])
  chain = [{"a": jnp.array([0.5, 1.0]), "b": jnp.array([0.0, 1.0])},
           {"a": jnp.array([2.0, -1.0]), "b": jnp.array([3.0, 0.5])},
           {"a": jnp.array([1.5, 0.3]), "b": jnp.array([-2.0, 4.0])}]
  e = [np.asarray(eps_cond_fn(x, t, c)) for c in chain]
  calls.clear()
  got = chained_cfg_eps_fn(eps_cond_fn, chain, (2.5, 4.0))(x, t)
  np.testing.assert_allclose(got, e[0] + 2.5 * (e[1] - e[0]) + 4.0 * (e[2] - e[1]), rtol=1e-6)
  assert calls == [6]
  one = chained_cfg_eps_fn(eps_cond_fn, chain[:2], (3.0,))(x, t)
  np.testing.assert_allclose(one, cfg_eps_fn(eps_cond_fn, chain[1], chain[0], 3.0)(x, t),
                             rtol=1e-6)
  with pytest.raises(ValueError, match="scales"):
    chained_cfg_eps_fn(eps_cond_fn, chain, (1.0,))
