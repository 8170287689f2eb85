"""benchmarks/ddpm_parity.py: its jgen config is diffusers' training recipe where jgen has a field.

Needs the `reference` extra (torch, diffusers); skipped without it. No data is read: the
recipe's U-Net is tiny (8x8 images) and the optimizer runs on a few random leaves.
"""

import importlib.util
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jgen.ops.schedules import q_sample
from jgen.train import load_method
from jgen.train.optim import make_optimizer

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "ddpm_parity.py")
# A recipe whose every hyperparameter differs from jgen's defaults, so a field that
# jgen_overrides forgot or swapped changes the result.
TINY = dict(block_out_channels=(8, 16), norm_num_groups=4, image_size=8, attention_resolution=4,
            batch_size=2, steps=8, warmup=3, lr=0.05, adam_beta1=0.85, adam_beta2=0.99,
            adam_weight_decay=0.3, adam_epsilon=1e-3, grad_clip=0.7)


@pytest.fixture(scope="module")
def script():
  """The benchmark module, loaded once per process (it defines absl flags)."""
  pytest.importorskip("torch")
  pytest.importorskip("diffusers")
  if "ddpm_parity" not in sys.modules:
    spec = importlib.util.spec_from_file_location("ddpm_parity", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["ddpm_parity"] = module
    spec.loader.exec_module(module)
  return sys.modules["ddpm_parity"]


def _config(script, recipe):
  return script.jgen_config(script.jgen_overrides(recipe, data="digits", seed=0))


def _rel_err(got, want) -> float:
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))


def test_converted_initial_unet_trains_like_torch(script):
  """The seeded UNet2DModel, converted, in the DDPM method that the script's config builds:
  the same x_t, eps prediction, loss and gradients (train mode) as in torch."""
  torch = script.torch
  recipe = script.Recipe(**TINY)
  model = script.reference_unet(recipe, seed=3).train()
  params = script.jgen_params(model.config, {k: v.detach().numpy()
                                             for k, v in model.state_dict().items()})
  method = load_method(_config(script, recipe))
  rng = np.random.RandomState(0)
  x0 = rng.uniform(-1, 1, (3, 3, 8, 8)).astype(np.float32)
  noise = rng.randn(3, 3, 8, 8).astype(np.float32)
  t = np.array([0, 411, 999])

  x_t = script.noise_scheduler(recipe).add_noise(torch.from_numpy(x0), torch.from_numpy(noise),
                                                 torch.from_numpy(t))
  pred = model(x_t, torch.from_numpy(t)).sample
  loss = script.F.mse_loss(pred, torch.from_numpy(noise))
  loss.backward()
  want_grads = script.jgen_params(model.config, {k: p.grad.numpy()
                                                 for k, p in model.named_parameters()})

  nhwc = lambda a: jnp.asarray(a.transpose(0, 2, 3, 1))
  jx_t = q_sample(method.schedule, nhwc(x0), jnp.asarray(t), nhwc(noise))
  assert _rel_err(jx_t, x_t.detach().numpy().transpose(0, 2, 3, 1)) < 1e-6

  def jgen_loss(p):
    eps = method.model_fn(p, train=True, dropout_rng=jax.random.key(0))(jx_t, jnp.asarray(t))
    return jnp.mean(jnp.square(eps - nhwc(noise))), eps

  (got_loss, eps), grads = jax.value_and_grad(jgen_loss, has_aux=True)(params)
  assert _rel_err(eps, pred.detach().numpy().transpose(0, 2, 3, 1)) < 1e-5
  assert abs(float(got_loss) - loss.item()) < 1e-5 * loss.item()
  flat_got = dict(jax.tree_util.tree_leaves_with_path(grads))
  flat_want = dict(jax.tree_util.tree_leaves_with_path(want_grads))
  assert flat_got.keys() == flat_want.keys()
  # Each leaf to 1e-4 of its own largest entry, plus 1e-6 of the largest gradient for the
  # attention key biases, whose gradient is 0 (softmax ignores a shift of all the logits) and
  # both sides round to ~1e-10.
  scale = max(float(np.abs(w).max()) for w in flat_want.values())
  for k, want in flat_want.items():
    err = float(np.abs(np.asarray(flat_got[k]) - want).max())
    assert err <= 1e-4 * float(np.abs(want).max()) + 1e-6 * scale, (jax.tree_util.keystr(k), err)


def test_optimizer_follows_torch_adamw_and_diffusers_schedule(script):
  """optim.* of the config = torch AdamW + clip_grad_norm_ + diffusers' cosine warm-up: the
  parameters after each of 8 steps (warm-up 3, gradients above and below the clip norm)."""
  torch = script.torch
  recipe = script.Recipe(**TINY)
  config = _config(script, recipe)
  tx = make_optimizer(config.optim, total_steps=config.train.num_steps)
  rng = np.random.RandomState(1)
  params = {"a": rng.randn(5, 3).astype(np.float32), "b": rng.randn(7).astype(np.float32)}
  leaves = [torch.nn.Parameter(torch.from_numpy(params[k].copy())) for k in ("a", "b")]
  opt, schedule = script.reference_optimizer(leaves, recipe)
  state = tx.init(params)
  for scale in (0.01, 3.0, 0.1, 5.0, 0.02, 1.0, 0.3, 2.0):
    grads = {k: (rng.randn(*v.shape) * scale).astype(np.float32) for k, v in params.items()}
    for leaf, k in zip(leaves, ("a", "b")):
      leaf.grad = torch.from_numpy(grads[k].copy())
    script.reference_update(leaves, opt, schedule, recipe)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    for leaf, k in zip(leaves, ("a", "b")):
      np.testing.assert_allclose(params[k], leaf.detach().numpy(), rtol=0, atol=2e-6)
  assert opt.param_groups[0]["lr"] == 0.0  # the cosine ended: the whole schedule was used


def test_recipe_fields(script):
  """What the config sets beyond the optimizer: the noise schedule, loss, EMA cap, flips,
  batch, steps, dropout and the U-Net's shape, each against the reference's value."""
  recipe = script.Recipe(**TINY)
  config = _config(script, recipe)
  scheduler = script.noise_scheduler(recipe)
  method = load_method(config)
  np.testing.assert_allclose(method.schedule.alphas_cumprod, scheduler.alphas_cumprod.numpy(),
                             rtol=1e-6)
  assert (config.diffusion.loss_type, config.diffusion.prediction) == ("mse", "eps")
  assert scheduler.config.prediction_type == "epsilon"
  assert (config.train.ema_decay, config.train.ema_warmup) == (recipe.ema_max_decay, True)
  assert config.data.random_flip == recipe.random_flip
  assert (config.data.batch_size, config.train.num_steps) == (recipe.batch_size, recipe.steps)
  unet = script.reference_unet(recipe, seed=0)
  assert config.model.dropout == unet.config.dropout == 0.0
  want = script.jgen_params(unet.config, {k: v.detach().numpy()
                                          for k, v in unet.state_dict().items()})
  got = jax.eval_shape(method.init, jax.random.key(0),
                       {"image": jnp.zeros((1, 8, 8, 3))}).params
  assert jax.tree.map(np.shape, got) == jax.tree.map(np.shape, want)
  overrides = script.jgen_overrides(recipe, data="digits", seed=0, init_workdir="/tmp/init")
  assert "--config.init_from.workdir=/tmp/init" in script.flag_args(overrides)
  assert "--config.model.ch_mult=(1, 2)" in script.flag_args(overrides)


def test_timing_windows(script):
  """Loop seconds and the steady s/step from window end times (the first window excluded)."""
  ends = {2: 10.0, 4: 11.0, 5: 11.6}
  per_step = dict(zip(sorted(ends), script.window_seconds(ends, start=0.0)))
  assert per_step == pytest.approx({2: 5.0, 4: 0.5, 5: 0.6})
  summary = script.summarize(per_step, {2: 1.0, 4: 0.5, 5: 0.3})
  assert summary["loop_s"] == pytest.approx(11.6)
  assert summary["s_per_step"] == pytest.approx(0.55)
  assert summary["late_loss"] == pytest.approx(0.4) and summary["steps"] == 5
  assert script.log_steps(2, 5) == [2, 4, 5] and script.log_steps(5, 5) == [5]
