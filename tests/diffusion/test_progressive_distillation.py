"""Progressive distillation: the round schedule on its exact steps; the target and the sampler
against NumPy closed forms on a linear teacher (the optimal denoiser of Gaussian data, for which
every DDIM step is a scalar multiple of z); the weighting against NumPy; the method through the
loop on a ddpm_digits:smoke teacher, with resume mid-round and across a round boundary bitwise
equal to an uninterrupted run, each round's teacher the previous round's student, and sampling
at the distilled N or a chosen K (a warning off the grid); clear errors for bad setups."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.ops.schedules import get_schedule
import jgen.run
from jgen.diffusion import progressive_distillation as pd
from jgen.diffusion.parameterization import alpha_sigma
from jgen.train import init_from as init_from_lib
from jgen.train import load_method
from tests.conftest import checkpoint_steps, load_experiment

T = 20
DATA_VAR = 0.3  # x ~ N(0, DATA_VAR I): the optimal x-prediction is linear in z


# ------------------------------------------------------------------ NumPy references


def np_alpha_sigma(betas: np.ndarray, u: float) -> tuple[float, float]:
  """alpha, sigma at level u (tau = u T - 1; log sigma_edm interpolated; u = 0 clean)."""
  if u <= 0:
    return 1.0, 0.0
  abar = np.cumprod(1.0 - betas)
  log_sig = np.log(np.sqrt(1.0 / abar - 1.0))
  tau = max(u * len(betas) - 1.0, 0.0)
  sig_edm = np.exp(np.interp(tau, np.arange(len(betas)), log_sig))
  alpha = 1.0 / np.sqrt(1.0 + sig_edm**2)
  return alpha, sig_edm * alpha


def np_gain(betas, u):
  """x0 = c z for Gaussian data N(0, DATA_VAR): c = alpha v / (alpha^2 v + sigma^2)."""
  a, s = np_alpha_sigma(betas, u)
  return a * DATA_VAR / (a * a * DATA_VAR + s * s)


def np_ddim_gain(betas, u_t, u_s):
  """z_s = g z_t for one DDIM step of the linear teacher."""
  a_t, s_t = np_alpha_sigma(betas, u_t)
  a_s, s_s = np_alpha_sigma(betas, u_s)
  c = np_gain(betas, u_t)
  return a_s * c + (s_s / s_t) * (1.0 - a_t * c)


def np_target_gain(betas, u, n):
  """x~ = k z: the x-prediction whose one step u -> u - 1/n equals two teacher steps."""
  mid, end = u - 0.5 / n, u - 1.0 / n
  z_end = np_ddim_gain(betas, u, mid) * np_ddim_gain(betas, mid, end)
  a_t, s_t = np_alpha_sigma(betas, u)
  a_s, s_s = np_alpha_sigma(betas, end)
  return (z_end - (s_s / s_t)) / (a_s - (s_s / s_t) * a_t)


@pytest.fixture(scope="module")
def schedule():
  return get_schedule("linear", T)


def _betas(schedule):
  return np.asarray(schedule.betas, np.float64)


def _linear_teacher(schedule):
  """The Gaussian-data optimal x-prediction as a JAX `x0_fn(z, tau)` (tau -> its level)."""
  def x0_fn(z, tau):
    a, s = alpha_sigma(schedule, tau.astype(jnp.float32), z)
    return a * DATA_VAR / (a * a * DATA_VAR + s * s) * z
  return x0_fn


# ------------------------------------------------------------------ pure parts


def test_round_schedule_on_its_exact_steps():
  rounds = pd.RoundSchedule(start_steps=8, final_steps=1, steps_per_round=3)
  assert (rounds.num_rounds, rounds.total_steps) == (4, 12)
  want_round = [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
  assert [rounds.round_of(s) for s in range(12)] == want_round
  assert [rounds.steps_of_round(r) for r in range(4)] == [8, 4, 2, 1]
  # The N a state after `step` updates was distilled to: the round of its last update.
  assert [rounds.distilled_steps(s) for s in range(13)] == [8, 8, 8, 8, 4, 4, 4, 2, 2, 2,
                                                            1, 1, 1]
  traced = jax.jit(lambda s: (rounds.round_of(s), rounds.steps_of_round(rounds.round_of(s)),
                              rounds.distilled_steps(s)))
  for s in range(13):
    r, n, d = (int(v) for v in traced(jnp.int32(s)))
    assert (r, n, d) == (rounds.round_of(s), rounds.steps_of_round(rounds.round_of(s)),
                         rounds.distilled_steps(s))
  with pytest.raises(ValueError, match="power of two"):
    pd.RoundSchedule(12, 1, 3)
  with pytest.raises(ValueError, match="final_steps <= start_steps"):
    pd.RoundSchedule(2, 4, 3)


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_target_equals_its_closed_form_on_a_linear_teacher(schedule, n):
  betas = _betas(schedule)
  i = np.arange(1, n + 1)
  u = jnp.asarray(i / n, jnp.float32)
  z = jax.random.normal(jax.random.key(0), (n, 3, 3, 1))
  got = pd.distillation_target(_linear_teacher(schedule), schedule, z, u, n)
  want = np.array([np_target_gain(betas, k / n, n) for k in i])[:, None, None, None]
  np.testing.assert_allclose(np.asarray(got), want * np.asarray(z, np.float64), rtol=2e-4,
                             atol=1e-5)
  # The target is the teacher's: one student DDIM step with x~ lands on the two teacher steps.
  for k in i:
    a_t, s_t = np_alpha_sigma(betas, k / n)
    a_s, s_s = np_alpha_sigma(betas, (k - 1) / n)
    kk = np_target_gain(betas, k / n, n)
    one = a_s * kk + (s_s / s_t) * (1 - a_t * kk)
    two = np_ddim_gain(betas, k / n, (k - 0.5) / n) * np_ddim_gain(betas, (k - 0.5) / n,
                                                                   (k - 1) / n)
    np.testing.assert_allclose(one, two, rtol=1e-9)


@pytest.mark.parametrize("weighting", pd.WEIGHTINGS)
def test_loss_is_zero_at_the_target_and_weights_the_x_error(schedule, weighting):
  betas, n, batch = _betas(schedule), 4, 16
  gains = np.array([np_target_gain(betas, k / n, n) for k in range(1, n + 1)])

  def student(offset):
    def fn(z, tau):  # an x0 student: k(u) z (+ offset), u recovered from tau = u T - 1
      level = jnp.round((tau + 1.0) / T * n).astype(jnp.int32)
      return jnp.asarray(gains, jnp.float32)[level - 1][:, None, None, None] * z + offset
    return fn

  x0 = jax.random.normal(jax.random.key(1), (batch, 2, 2, 1)) * np.sqrt(DATA_VAR)
  rng = jax.random.key(2)
  kw = dict(prediction="x0", weighting=weighting)
  loss0, _ = pd.distillation_loss(student(0.0), _linear_teacher(schedule), schedule, x0, rng,
                                  n, **kw)
  assert float(loss0) < 1e-9
  loss1, metrics = pd.distillation_loss(student(1.0), _linear_teacher(schedule), schedule, x0,
                                        rng, n, **kw)
  # Levels i ~ U{1..N} from split(rng)[0] (the documented convention); x error 1 everywhere.
  i = np.asarray(jax.random.randint(jax.random.split(rng)[0], (batch,), 1, n + 1))
  snr = np.array([(lambda a, s: (a / s) ** 2)(*np_alpha_sigma(betas, k / n)) for k in i])
  w = np.maximum(snr, 1.0) if weighting == "truncated_snr" else snr + 1.0
  np.testing.assert_allclose(float(loss1), w.mean(), rtol=1e-4)
  np.testing.assert_allclose(float(metrics["x_mse"]), 1.0, rtol=1e-5)


@pytest.mark.parametrize("steps", [1, 3, 4])
def test_student_sampler_is_ddim_on_the_level_grid(schedule, steps):
  betas = _betas(schedule)
  x_T = jax.random.normal(jax.random.key(3), (2, 2, 2, 1))
  got = pd.student_ddim_sample(_linear_teacher(schedule), schedule, jax.random.key(0),
                               x_T.shape, steps=steps, clip_denoised=False, x_T=x_T)
  gain = 1.0
  for k in range(steps, 0, -1):
    gain *= np_ddim_gain(betas, k / steps, (k - 1) / steps)
  np.testing.assert_allclose(np.asarray(got), gain * np.asarray(x_T), rtol=1e-4, atol=1e-6)
  traced = jax.jit(lambda s: pd.student_ddim_sample(
      _linear_teacher(schedule), schedule, jax.random.key(0), x_T.shape, steps=s,
      clip_denoised=False, x_T=x_T))(jnp.int32(steps))
  np.testing.assert_allclose(np.asarray(traced), np.asarray(got), rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------ through the loop
# One teacher and three distillation runs (52 s here, over the 40 s default budget): `-m slow`.


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
  """A tiny ddpm_digits:smoke run trained with v-prediction (8x8, T = 20)."""
  workdir = str(tmp_path_factory.mktemp("teacher"))
  config = load_experiment("ddpm/digits", "smoke")
  config.diffusion.prediction = "v"
  config.train.eval_every = 0
  jgen.run.main(config, workdir=workdir)
  return workdir


def _config(teacher, num_steps=6):
  config = load_experiment("distill/progressive_digits", "smoke")
  config.init_from.workdir = teacher
  config.train.num_steps = num_steps
  return config


@pytest.fixture(scope="module")
def runs(tmp_path_factory, teacher_run):
  """(uninterrupted dir, its final state, interrupted dir, its state at 3, its final state):
  rounds 4 -> 2 -> 1 of 2 updates; the interrupted run stops mid-round 1 and resumes across the
  round-2 boundary."""
  full = str(tmp_path_factory.mktemp("full"))
  final = jgen.run.main(_config(teacher_run), workdir=full)
  cut = str(tmp_path_factory.mktemp("cut"))
  mid = jax.device_get(jgen.run.main(_config(teacher_run, 3), workdir=cut))
  assert checkpoint_steps(cut) == [2, 3]
  resumed = jgen.run.main(_config(teacher_run), workdir=cut)
  return full, jax.device_get(final), cut, mid, jax.device_get(resumed)


def _load(workdir, step, source):
  return init_from_lib.load(init_from_lib.InitFrom(workdir, step=step, source=source))[0]


def _assert_trees_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb) and la
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow  # the loop fixture: 52 s of setup on 2 shared cores
def test_resume_mid_round_and_across_a_boundary_is_exact(runs):
  full, final, _, _, resumed = runs
  assert int(final.step) == int(resumed.step) == 6
  _assert_trees_equal(final.checkpoint_items(), resumed.checkpoint_items())
  assert checkpoint_steps(full) == [2, 4, 6]


@pytest.mark.slow  # the loop fixture: 52 s of setup on 2 shared cores
def test_each_round_teaches_with_the_previous_student(runs, teacher_run):
  full, final, cut, mid, _ = runs
  original = _load(teacher_run, None, "ema")
  # The frozen teacher is the teacher run's EMA, bitwise, and never changes.
  _assert_trees_equal(final.frozen[pd.FROZEN], original)
  # Round 0 (steps 1-2) is taught by it; round 1 (3-4) by the student after step 2; round 2
  # (5-6) by the student after step 4 (no EMA: the student itself).
  _assert_trees_equal(_load(full, 2, "model_state")[pd.TEACHER], original)
  _assert_trees_equal(mid.model_state[pd.TEACHER], _load(full, 2, "params"))
  _assert_trees_equal(final.model_state[pd.TEACHER], _load(full, 4, "params"))
  # The student of round 1 started from that teacher with a fresh optimizer: one update in.
  counts = [int(v) for path, v in jax.tree_util.tree_flatten_with_path(mid.opt_state)[0]
            if "count" in jax.tree_util.keystr(path)]
  assert counts and all(c == 1 for c in counts)


@pytest.mark.slow  # the loop fixture: 52 s of setup on 2 shared cores
def test_sampling_at_the_distilled_n_or_a_chosen_k(runs, teacher_run, caplog):
  full = runs[0]
  config = _config(teacher_run)
  paths = jgen.run.main(config, workdir=full, mode="sample")
  images = np.load(paths["npz"])["images"]
  assert images.shape == (config.sample.num, 8, 8, 1) and images.dtype == np.uint8
  assert "step6_pd_ddim_distilled" in paths["npz"]
  config.sample.steps = 2
  with caplog.at_level(logging.WARNING, logger=pd.__name__):
    paths = jgen.run.main(config, workdir=full, mode="sample")
  assert "step6_pd_ddim2" in paths["npz"]
  assert "distilled to 1 steps, with sample.steps=2" in caplog.text
  caplog.clear()
  config.sample.steps = 1
  with caplog.at_level(logging.WARNING, logger=pd.__name__):
    jgen.run.main(config, workdir=full, mode="sample")
  assert "distilled to" not in caplog.text


@pytest.mark.slow  # the loop fixture: 52 s of setup on 2 shared cores
def test_bad_setups_are_clear_errors(tmp_path, teacher_run, runs):
  with pytest.raises(ValueError, match="init_from.workdir is empty"):
    load_method(_config(""))
  with pytest.raises(ValueError, match="run record|not the work directory"):
    load_method(_config(str(tmp_path)))
  with pytest.raises(ValueError, match="not a 'diffusion.ddpm' one"):
    load_method(_config(runs[0]))
  config = _config(teacher_run)
  config.data.image_size = 16
  with pytest.raises(ValueError, match="data.image_size"):
    load_method(config)
  with pytest.raises(ValueError, match="train.num_steps <= 6"):
    load_method(_config(teacher_run, 7))
  config = _config(teacher_run)
  config.diffusion.start_steps = 16
  with pytest.raises(ValueError, match="start_steps <= 10"):
    load_method(config)
  config = _config(teacher_run)
  config.diffusion.prediction = "eps"
  with pytest.raises(ValueError, match="eps prediction fails at few steps"):
    load_method(config)
