"""Flow matching, rectified flow's reflow stage and latent flow matching through the loop.

One flow_matching_digits:smoke run (module fixture) is trained, evaluated and sampled; its
sampler is checked against a hand-written Euler loop over the EMA U-Net (x <- x + dt u(x,
1000 t) on t = 1, 0.8, ..., 0). The same run is the parent of a
rectified_flow_digits:reflow,smoke stage: its couples are cached in workdir/reflow, are the
parent's 2-step Euler solutions from their noise, the student starts at the parent's EMA
weights (a zero learning rate keeps them), and a second start in a workdir holding the file
(the method's `prepare`, which the loop calls first) reads it instead of drawing again. The
conditional variant samples the asked labels with classifier-free guidance on the velocity,
(1 - w) u(x, null) + w u(x, label). A DDPM sampler ('ddim') or a sigma-space
one is refused for the linear path with a ValueError before anything compiles. A latent flow
(ldm_digits:smoke turned into flow matching on a frozen vqgan_digits:smoke) trains and
samples (marked slow: a first stage and a latent run, ~40 s of CPU).

The loop runs shrink the smoke configs' U-Net to one level without attention (`_small`, as
test_ddpm_cond.py does): these tests are about the objective, the samplers, the couples and
the loop, and the U-Net's tracing dominates their time.
"""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgen.run
from jgen.diffusion import flow_matching as fm
from jgen.diffusion.ddpm import ConditionalDDPM
from jgen.ops.processes import Linear
from jgen.train import init_from as init_from_lib
from jgen.train import load_method
from jgen.train.config import experiment_module
from tests.conftest import REPO, checkpoint_steps, load_experiment


def _small(config):
  """`config` with the smallest U-Net (one level, no attention)."""
  config.model.ch_mult = (1,)
  config.model.attn_resolutions = ()
  return config


@pytest.fixture(scope="module")
def fm_run(tmp_path_factory):
  """(config, workdir, final state) of flow_matching_digits:smoke (6 steps; evaluated by the
  test, not the loop)."""
  workdir = str(tmp_path_factory.mktemp("fm"))
  config = _small(load_experiment("ddpm/flow_matching_digits", "smoke"))
  config.train.eval_every = 0
  state = jgen.run.main(config, workdir=workdir)
  return config, workdir, state


def _euler_by_hand(model, params, z, steps, conditions=None):
  """Euler's method on dx/dt = u(x, 1000 t) from t = 1 to 0 in `steps` equal steps."""
  apply = jax.jit(lambda x, t: model.apply(params, x, t, conditions, train=False))
  ts = np.linspace(1.0, 0.0, steps + 1)
  x = z
  for t, t_next in zip(ts[:-1], ts[1:]):
    x = x + (t_next - t) * apply(x, jnp.full((x.shape[0],), 1000.0 * t, jnp.float32))
  return np.asarray(x)


def test_train_evaluate_and_sample(fm_run):
  config, workdir, state = fm_run
  assert int(state.step) == config.train.num_steps == 6
  assert checkpoint_steps(workdir) == [3, 6]
  assert os.path.exists(os.path.join(workdir, "samples", "step_0000006.png"))
  method = load_method(config)
  assert isinstance(method.schedule, Linear) and method.prediction == "velocity"
  assert isinstance(method.objective, fm.FlowMatchingObjective)
  assert method.objective.distribution == "logit_normal"

  result = jgen.run.main(config, workdir=workdir, mode="eval")
  # An untrained velocity: E||eps - x0||^2 = 1 + E[x0^2] per pixel, about 1.3 to 2 on digits.
  assert np.isfinite(result["loss"]) and 0.2 < result["loss"] < 5.0

  paths = jgen.run.main(config, workdir=workdir, mode="sample")
  assert os.path.exists(paths["png"]) and "ode_euler5_shift1" in paths["npz"]
  images = np.load(paths["npz"])["images"]
  assert images.shape == (config.sample.num, 8, 8, 1) and np.isfinite(images).all()

  # The method's sampler is Euler in t on the EMA velocity, fed 1000 t.
  z = jax.random.normal(jax.random.key(4), (3, 8, 8, 1))
  got = method.run_sampler(method.sampling_fn(state.ema_params), jax.random.key(0), 3, x_T=z)
  want = _euler_by_hand(method.model, state.ema_params, z, config.sample.steps)
  assert np.isfinite(np.asarray(got)).all()
  np.testing.assert_allclose(got, want, atol=1e-4)
  assert np.abs(want - np.asarray(z)).max() > 1e-2  # the velocity moved the points


def test_conditional_samples_the_asked_labels_with_guidance(tmp_path):
  config = _small(load_experiment("ddpm/flow_matching_digits", "cond,smoke"))
  config.train.num_steps = 2
  config.train.eval_every = 0
  workdir = str(tmp_path / "cond")
  state = jgen.run.main(config, workdir=workdir)
  method = load_method(config)
  assert isinstance(method, ConditionalDDPM) and method.guidance_scale == 2.0

  config.sample.labels = "3,7"
  config.sample.guidance_scale = 3.0
  paths = jgen.run.main(config, workdir=workdir, mode="sample")
  saved = np.load(paths["npz"])
  n = config.sample.num
  assert saved["images"].shape == (n, 8, 8, 1) and np.isfinite(saved["images"]).all()
  np.testing.assert_array_equal(saved["labels"], np.resize([3, 7], n))
  assert "ode_euler5" in paths["npz"] and "_w3" in paths["npz"]

  # Guidance on the velocity: (1 - w) u(x, null) + w u(x, label), null = class 10.
  method = load_method(config)
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 1))
  t = jnp.array([0.3, 0.9])
  labels = jnp.array([3, 7], jnp.int32)

  @jax.jit
  def guided_and_parts(params):
    u = lambda lab: method.model.apply(params, x, 1000.0 * t, {"label": lab},  # noqa: E731
                                       train=False)
    guided = method.guided_sampling_fn(params, {"label": labels})(x, t)
    return guided, u(jnp.full((2,), 10, jnp.int32)), u(labels)

  guided, u_null, u_label = guided_and_parts(state.ema_params)
  np.testing.assert_allclose(guided, -2.0 * u_null + 3.0 * u_label, rtol=1e-4, atol=1e-5)
  assert np.abs(np.asarray(u_label) - np.asarray(u_null)).max() > 1e-4  # the label matters


def test_ddpm_and_sigma_space_samplers_are_refused_before_compiling(tmp_path, monkeypatch):
  def no_compiling(*args, **kwargs):
    raise AssertionError("compiled before refusing the sampler")

  monkeypatch.setattr(jax, "jit", no_compiling)
  for sampler, names in (("ddim", "ode_euler"), ("dpmpp_2m", "ode_euler"),
                         ("heun", "ode_euler")):
    config = load_experiment("ddpm/flow_matching_digits", "smoke")
    config.sample.sampler = sampler
    with pytest.raises(ValueError, match=names):
      load_method(config)
    with pytest.raises(ValueError, match=names):
      jgen.run.main(config, workdir=str(tmp_path / sampler))
    assert not os.path.exists(os.path.join(tmp_path, sampler, "checkpoints"))


# -- Reflow on the flow of `fm_run`. --


def _reflow_config(parent, **overrides):
  config = _small(load_experiment("ddpm/rectified_flow_digits", "reflow,smoke"))
  config.init_from.workdir = parent
  config.train.num_steps = 2
  for key, value in overrides.items():
    setattr(config.optim if key == "lr" else config.train, key, value)
  return config


def _cached_pairs(workdir):
  files = os.listdir(os.path.join(workdir, "reflow"))
  assert len(files) == 1 and files[0].startswith("pairs_n16_seed0_ode_euler2_shift1_")
  with np.load(os.path.join(workdir, "reflow", files[0])) as z:
    return files[0], {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def reflow_run(tmp_path_factory, fm_run):
  """(workdir, final state) of a reflow stage of `fm_run` with a zero learning rate: its
  parameters stay at what the loop started from."""
  workdir = str(tmp_path_factory.mktemp("reflow"))
  state = jgen.run.main(_reflow_config(fm_run[1], lr=0.0), workdir=workdir)
  return workdir, state


def test_reflow_draws_and_caches_the_parents_couples(fm_run, reflow_run):
  _, parent_dir, parent_state = fm_run
  workdir, state = reflow_run
  assert int(state.step) == 2
  name, pairs = _cached_pairs(workdir)
  assert set(pairs) == {"noise", "image"}
  assert pairs["noise"].shape == pairs["image"].shape == (16, 8, 8, 1)
  # The couples' noise is N(0, I) (1024 values: SE of the std 0.022).
  assert abs(pairs["noise"].mean()) < 0.15 and abs(pairs["noise"].std() - 1.0) < 0.1
  # The file's name carries the parent checkpoint's fingerprint.
  parent_ema, _ = init_from_lib.load(init_from_lib.InitFrom(parent_dir))
  assert init_from_lib.fingerprint(parent_ema)[:12] in name
  # Each couple is the parent's (EMA) 2-step Euler solution from its noise.
  method = load_method(_reflow_config(parent_dir))
  want = _euler_by_hand(method.flow.model, parent_ema, jnp.asarray(pairs["noise"]), 2)
  np.testing.assert_allclose(pairs["image"], want, atol=1e-4)
  # The student starts at the parent's EMA weights (lr 0 keeps them), and trains on the file.
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(parent_ema), strict=True):
    np.testing.assert_array_equal(np.asarray(a), b)
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(parent_state.ema_params),
                  strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for key in pairs:
    np.testing.assert_array_equal(np.asarray(state.frozen["pairs"][key]), pairs[key])
  assert os.path.exists(os.path.join(workdir, "samples", "step_0000002.png"))


def test_reflow_reuses_the_cached_couples(tmp_path, monkeypatch, fm_run, reflow_run):
  """A second start in a workdir holding the cache (a fresh one with a copy of it) reads the
  couples: drawing again would raise. (`prepare` is what the loop calls at every start.)"""
  workdir = str(tmp_path / "again")
  shutil.copytree(os.path.join(reflow_run[0], "reflow"), os.path.join(workdir, "reflow"))
  _, pairs = _cached_pairs(workdir)

  def no_drawing(self, params):
    raise AssertionError("drew the couples again")

  monkeypatch.setattr(fm.Reflow, "draw_pairs", no_drawing)
  method = load_method(_reflow_config(fm_run[1]))
  assert method.pairs is None
  prepared = method.prepare(workdir)
  for key in pairs:
    np.testing.assert_array_equal(prepared.pairs[key], pairs[key])
  assert prepared.prepare(workdir) is prepared
  # Without the cache it draws (here: the patched method raises), and so does a cache drawn by
  # another parent checkpoint (its fingerprint names the file).
  with pytest.raises(AssertionError, match="drew the couples again"):
    method.prepare(str(tmp_path / "fresh"))
  other = _reflow_config(fm_run[1])
  other.init_from.step = 3
  with pytest.raises(AssertionError, match="drew the couples again"):
    load_method(other).prepare(workdir)


def test_reflow_needs_a_parent():
  config = load_experiment("ddpm/rectified_flow_digits", "reflow,smoke")
  with pytest.raises(ValueError, match="init_from.workdir"):
    load_method(config)
  config.flow_matching.latent = True
  config.init_from.workdir = "/nonexistent"
  with pytest.raises(ValueError, match="latent=False"):
    load_method(config)


# -- Latent flow matching. --


def _latent_fm_config(fs_workdir):
  base = experiment_module("ddpm/base", str(REPO / "experiments" / "_"))
  config = base.flow_matching(load_experiment("ldm/digits", "smoke"))
  config.flow_matching.latent = True
  config.init_from.workdir = fs_workdir
  config.train.eval_every = 0
  return config


@pytest.mark.slow  # a vqgan_digits:smoke first stage (shared) and a latent run: ~40 s of CPU
def test_latent_flow_matching_trains_and_samples(tmp_path, fs_run):
  config = _latent_fm_config(fs_run)
  workdir = str(tmp_path / "latent_fm")
  state = jgen.run.main(config, workdir=workdir)
  assert int(state.step) == config.train.num_steps
  method = load_method(config)
  assert isinstance(method.ddpm.schedule, Linear) and method.ddpm.prediction == "velocity"
  config.sample.labels = "5"
  paths = jgen.run.main(config, workdir=workdir, mode="sample")
  saved = np.load(paths["npz"])
  assert saved["images"].shape == (config.sample.num, 8, 8, 1)
  np.testing.assert_array_equal(saved["labels"], np.full(config.sample.num, 5))
  assert "ode_euler5" in paths["npz"]


@pytest.mark.slow  # the shared first stage and a text latent run: ~50 s of CPU
def test_text_conditioned_latent_flow_matching_samples_prompts(tmp_path, fs_run):
  """Latent flow matching with captions (ldm.conditioning='text'): the text path's CFG and
  loss go through the flow-matching objective, and --mode=sample draws the asked prompts."""
  base = experiment_module("ddpm/base", str(REPO / "experiments" / "_"))
  config = base.flow_matching(load_experiment("ldm/text_digits", "smoke"))
  config.flow_matching.latent = True
  config.init_from.workdir = fs_run
  config.train.eval_every = 0
  workdir = str(tmp_path / "text_fm")
  state = jgen.run.main(config, workdir=workdir)
  assert int(state.step) == config.train.num_steps
  method = load_method(config)
  assert isinstance(method.ddpm.objective, fm.FlowMatchingObjective)
  assert isinstance(method.ddpm.schedule, Linear)
  config.sample.prompts = "a handwritten three"
  paths = jgen.run.main(config, workdir=workdir, mode="sample")
  images = np.load(paths["npz"])["images"]
  assert images.shape[0] == config.sample.num and "ode_euler" in paths["npz"]
