"""Latent consistency models: the skip-k grid and LCM's scheduler timesteps, the boundary
condition exactly, the guided DDIM step and multistep sampling against the closed form of a
point-mass teacher, and (slow) distillation of an ldm_digits:smoke teacher through the loop:
the student starts as the teacher, trains, resumes bitwise and samples."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.ops.schedules import get_schedule
import jgen.run
from jgen.diffusion import lcm
from jgen.train import init_from as init_from_lib
from jgen.train import load_method
from jgen.train import inference
from tests.conftest import checkpoint_steps, load_experiment


def test_grid_and_sampling_timesteps_are_lcms():
  grid = lcm.skip_grid(1000, 20)
  np.testing.assert_array_equal(grid, np.arange(19, 1000, 20))
  # diffusers' LCMScheduler.set_timesteps with original_inference_steps=50 on T = 1000.
  assert lcm.lcm_timesteps(grid, 1).tolist() == [999]
  assert lcm.lcm_timesteps(grid, 2).tolist() == [999, 499]
  assert lcm.lcm_timesteps(grid, 4).tolist() == [999, 759, 519, 279]
  assert lcm.lcm_timesteps(grid, 8).tolist() == [999, 879, 759, 639, 519, 399, 279, 159]
  with pytest.raises(ValueError, match="lcm.skip"):
    lcm.skip_grid(1000, 0)
  with pytest.raises(ValueError, match="sample.steps"):
    lcm.lcm_timesteps(grid, 51)


def test_boundary_condition_is_exact():
  c_skip, c_out = lcm.lcm_boundary(jnp.zeros((3,), jnp.int32))
  assert np.all(np.asarray(c_skip) == 1.0) and np.all(np.asarray(c_out) == 0.0)
  z = jax.random.normal(jax.random.key(0), (3, 4, 4, 2))
  f = lcm.consistency_fn(lambda x, t: x * 7.0 + 3.0, sigma_data=0.5, timestep_scaling=10.0)
  np.testing.assert_array_equal(np.asarray(f(z, jnp.zeros((3,), jnp.int32))), np.asarray(z))
  # Away from 0, the closed form at t = 19 (a t = 190).
  s = 190.0
  got = np.asarray(lcm.lcm_boundary(jnp.full((1,), 19, jnp.int32)))[:, 0]
  np.testing.assert_allclose(got, [0.25 / (s * s + 0.25), s / np.sqrt(s * s + 0.25)], rtol=1e-6)


def _point_mass(schedule, mu):
  """The exact eps of data at the single point mu: (z - alpha_t mu) / sigma_t."""
  def eps_fn(z, t):
    a = schedule.sqrt_alphas_cumprod[t][:, None, None, None]
    s = schedule.sqrt_one_minus_alphas_cumprod[t][:, None, None, None]
    return (z - a * mu) / s
  return eps_fn


def test_guided_ddim_step_follows_the_point_mass_trajectory():
  schedule = get_schedule("linear", 1000)
  abar = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))  # DDPM's betas in NumPy
  mu = jax.random.normal(jax.random.key(1), (1, 4, 4, 2))
  eps = jax.random.normal(jax.random.key(2), (5, 4, 4, 2))
  t_hi = jnp.asarray([19, 39, 519, 999, 259], jnp.int32)
  t_lo = jnp.maximum(t_hi - 20, 0)
  a_hi, s_hi = np.sqrt(abar[t_hi]), np.sqrt(1 - abar[t_hi])
  z_hi = a_hi[:, None, None, None] * mu + s_hi[:, None, None, None] * eps
  got = lcm.guided_ddim_step(_point_mass(schedule, mu), schedule, jnp.asarray(z_hi, jnp.float32),
                             t_hi, t_lo)
  a_lo, s_lo = np.sqrt(abar[t_lo]), np.sqrt(1 - abar[t_lo])
  want = a_lo[:, None, None, None] * np.asarray(mu) + s_lo[:, None, None, None] * np.asarray(eps)
  np.testing.assert_allclose(np.asarray(got), want, atol=2e-4)


def test_multistep_sampling_of_the_exact_consistency_function_gives_the_point():
  schedule = get_schedule("linear", 1000)
  mu = jax.random.normal(jax.random.key(3), (1, 4, 4, 2))
  x0_fn = lambda z, t: jnp.broadcast_to(mu, z.shape)  # the exact x0 of a point mass
  f = lcm.consistency_fn(x0_fn, sigma_data=0.5, timestep_scaling=10.0)
  grid = lcm.skip_grid(1000, 20)
  for steps in (1, 2, 4):
    out = lcm.lcm_sample(f, schedule, jax.random.key(4), (6, 4, 4, 2),
                         lcm.lcm_timesteps(grid, steps))
    # f = c_skip z + c_out mu: c_skip <= 3.2e-6 at t >= 279, and c_out = 1 - O(1e-6).
    np.testing.assert_allclose(np.asarray(out), np.broadcast_to(np.asarray(mu), out.shape),
                               atol=2e-4)
  with pytest.raises(ValueError, match="decrease"):
    lcm.lcm_sample(f, schedule, jax.random.key(4), (2, 4, 4, 2), [19, 999])


def test_a_missing_teacher_is_a_clear_error(tmp_path):
  config = load_experiment("distill/lcm_digits", "smoke")
  config.init_from.workdir = str(tmp_path)
  with pytest.raises(ValueError, match="run_record|run record"):
    load_method(config)
  config = load_experiment("distill/lcm_digits", "smoke")
  with config.unlocked():
    config.init_from.autoencoder.into = "params"
  with pytest.raises(ValueError, match="frozen/autoencoder"):
    load_method(config)


# ------------------------------------------------------------------ through the loop (slow)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, fs_run):
  workdir = str(tmp_path_factory.mktemp("ldm_teacher"))
  config = load_experiment("ldm/digits", "smoke")
  config.init_from.workdir = fs_run
  config.train.eval_every = 0
  jgen.run.main(config, workdir=workdir)
  return workdir


def _lcm_config(teacher_workdir):
  config = load_experiment("distill/lcm_digits", "smoke")
  config.init_from.workdir = teacher_workdir
  return config


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.mark.slow  # an ldm_digits:smoke teacher and two LCM runs: ~2 min on 2 cores
def test_lcm_starts_as_the_teacher_trains_resumes_and_samples(tmp_path, teacher_run):
  config = _lcm_config(teacher_run)
  method = load_method(config)
  assert config.init_from.autoencoder.workdir == teacher_run  # one flag sets both loads
  images = jnp.zeros((4, 8, 8, 1), jnp.float32)
  state = method.init(jax.random.key(0), {"image": images, "label": jnp.zeros((4,), jnp.int32)})
  # The student at init is the teacher's conditional network at every w (zero w projection).
  z = jax.random.normal(jax.random.key(5), (4, *method.teacher.latent_shape))
  t = jnp.asarray([4, 9, 14, 19], jnp.int32)
  labels = jnp.asarray([0, 3, 7, 9], jnp.int32)
  teacher_out = method.teacher.ddpm.model_fn(state.frozen["teacher"], {"label": labels})(z, t)
  for w in (1.0, 4.5):
    cond = method.conditions(labels, jnp.full((4,), w))
    student_out = method.student.model_fn(state.params, cond)(z, t)
    np.testing.assert_allclose(np.asarray(student_out), np.asarray(teacher_out), atol=1e-6)
  tparams, _ = init_from_lib.load(init_from_lib.InitFrom(teacher_run))
  for a, b in zip(_leaves(tparams), _leaves(state.frozen["teacher"]), strict=True):
    np.testing.assert_array_equal(a, b)

  straight = str(tmp_path / "straight")
  final = jgen.run.main(_lcm_config(teacher_run), workdir=straight)
  assert int(final.step) == 4 and checkpoint_steps(straight) == [2, 4]
  assert any(not np.array_equal(a, b)  # the student trained
             for a, b in zip(_leaves(final.params), _leaves(state.params), strict=True))
  for a, b in zip(_leaves(tparams), _leaves(final.frozen["teacher"]), strict=True):
    np.testing.assert_array_equal(a, b)

  resumed = str(tmp_path / "resumed")
  half = _lcm_config(teacher_run)
  half.train.num_steps = 2
  jgen.run.main(half, workdir=resumed)
  again = jgen.run.main(_lcm_config(teacher_run), workdir=resumed)
  for a, b in zip(_leaves(final.params), _leaves(again.params), strict=True):
    np.testing.assert_array_equal(a, b)

  method, _, restored = inference.restore_for_inference(_lcm_config(teacher_run), straight)
  images = method.sample_conditional(restored, jax.random.key(0),
                                     {"label": jnp.arange(4, dtype=jnp.int32)}, 4)
  assert images.shape == (4, 8, 8, 1)
  assert np.all(np.isfinite(np.asarray(images))) and float(jnp.max(jnp.abs(images))) <= 1.0
