"""EDM (Karras et al. 2022) through the loop: edm_digits:smoke trains (one module-scoped run),
evaluates and samples with Algorithm 2 ('edm') with churn; its network is the preconditioned
U-Net of Table 1, D(x; sigma) = c_skip x + c_out F(c_in x; ln(sigma) / 4), checked against
float64 coefficients; the sampler table's sigma-space and ODE samplers are accepted for the EDM
process and DDPM's discrete ones refused before anything compiles.

The loop run shrinks the smoke config's U-Net to one level without attention (as
test_ddpm_cond.py does): the test is about the objective, the sampler and the loop, and the
U-Net's tracing dominates its time."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgen.run
from jgen.diffusion import edm as edm_lib
from jgen.ops.processes import EDM
from jgen.train import load_method
from tests.conftest import checkpoint_steps, load_experiment


@pytest.fixture(scope="module")
def edm_run(tmp_path_factory):
  """(config, workdir, final state) of edm_digits:smoke (6 steps; evaluated by the test)."""
  workdir = str(tmp_path_factory.mktemp("edm"))
  config = load_experiment("ddpm/edm_digits", "smoke")
  config.model.ch_mult = (1,)
  config.model.attn_resolutions = ()
  config.train.eval_every = 0
  state = jgen.run.main(config, workdir=workdir)
  return config, workdir, state


def test_train_evaluate_and_sample_with_churn(edm_run):
  config, workdir, state = edm_run
  assert int(state.step) == config.train.num_steps == 6
  assert checkpoint_steps(workdir) == [3, 6]
  assert os.path.exists(os.path.join(workdir, "samples", "step_0000006.png"))
  method = load_method(config)
  assert isinstance(method.schedule, EDM) and isinstance(method.objective, edm_lib.EDMObjective)
  assert (method.sampler, method.prediction, method.sample_steps) == ("edm", "x0", 3)
  assert (method.schedule.sigma_min, method.schedule.sigma_max) == (0.002, 80.0)

  result = jgen.run.main(config, workdir=workdir, mode="eval")
  # lambda ||D - x0||^2 is the raw network's error against a unit-variance target: O(1).
  assert np.isfinite(result["loss"]) and 0.05 < result["loss"] < 20.0
  assert np.isfinite(result["unweighted"])

  config.sample.s_churn = 10.0
  config.sample.s_tmin = 0.05
  config.sample.s_tmax = 50.0
  config.sample.s_noise = 1.003
  paths = jgen.run.main(config, workdir=workdir, mode="sample")
  assert "edm3_rho7_churn10" in paths["npz"] and os.path.exists(paths["png"])
  assert np.load(paths["npz"])["images"].shape == (config.sample.num, 8, 8, 1)
  churned = load_method(config)
  assert (churned.s_churn, churned.s_tmin, churned.s_tmax, churned.s_noise) == (10, 0.05, 50, 1.003)
  images = jax.jit(lambda s, r: churned.sample(s, r, 4))(state, jax.random.key(0))
  assert images.shape == (4, 8, 8, 1) and np.isfinite(np.asarray(images)).all()


def test_network_is_the_preconditioned_unet(edm_run):
  config, _, state = edm_run
  method = load_method(config)
  sd = config.edm.sigma_data
  sigma = np.array([0.01, 0.4, 3.0, 60.0])
  x = jax.random.normal(jax.random.key(2), (4, 8, 8, 1)) * jnp.asarray(
      np.sqrt(sd**2 + sigma**2), jnp.float32)[:, None, None, None]
  total = sigma**2 + sd**2
  c_skip, c_out = sd**2 / total, sigma * sd / np.sqrt(total)
  c_in, c_noise = 1.0 / np.sqrt(total), np.log(sigma) / 4.0
  b = (slice(None), None, None, None)

  @jax.jit
  def outputs(params):
    sig = jnp.asarray(sigma, jnp.float32)
    f = method.model.apply(params, jnp.asarray(c_in[b], jnp.float32) * x,
                           jnp.asarray(c_noise, jnp.float32), None, train=False)
    return method.model_fn(params)(x, sig), f, method.eps_fn(params)(x, sig)

  d, f, eps = outputs(state.ema_params)
  want = c_skip[b] * np.asarray(x, np.float64) + c_out[b] * np.asarray(f, np.float64)
  np.testing.assert_allclose(d, want, rtol=1e-4, atol=1e-4)
  # The network is a denoiser: the samplers take it as it is, and converting to eps is
  # (x - D) / sigma (a = 1, s = sigma).
  assert method.sampling_prediction == "x0"
  np.testing.assert_allclose(eps, (np.asarray(x, np.float64) - want) / sigma[b], rtol=1e-3,
                             atol=1e-3)


def test_samplers_and_settings_are_checked_before_compiling(monkeypatch):
  def no_compiling(*args, **kwargs):
    raise AssertionError("compiled before checking")

  monkeypatch.setattr(jax, "jit", no_compiling)
  for sampler in ("edm", "heun", "euler", "ode_euler", "ode_heun", "ode_midpoint"):
    config = load_experiment("ddpm/edm_digits", "smoke")
    config.sample.sampler = sampler
    assert load_method(config).sampler == sampler
  for sampler in ("ddpm", "ddim", "dpmpp_2m"):
    config = load_experiment("ddpm/edm_digits", "smoke")
    config.sample.sampler = sampler
    with pytest.raises(ValueError, match="discrete chain.*'edm'"):
      load_method(config)
  config = load_experiment("ddpm/edm_digits", "smoke")
  config.diffusion.prediction = "eps"
  with pytest.raises(ValueError, match="prediction='x0'"):
    load_method(config)
  config = load_experiment("ddpm/edm_digits", "smoke")
  config.edm.sigma_data = 0.0
  with pytest.raises(ValueError, match="sigma_data"):
    load_method(config)
