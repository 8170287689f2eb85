"""StyleGAN2 as a method: truncation, style mixing, the W-space path-length term against
finite differences and NumPy, the lazy terms on their steps, and a smoke run through the loop
(samples, truncation, the style-mixing figure, eval with PPL at two psi)."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jgen.run
from jgen.gan import stylegan2, updates
from jgen.train.method import load_method
from jgen.train.state import TrainState, per_network
from tests.conftest import load_experiment


def _method(**overrides):
  config = load_experiment("gan/stylegan2_digits", "smoke")
  for k, v in overrides.items():
    block, key = k.split(".")
    config[block][key] = v
  return load_method(config), config


def _state(method, config, seed=0):
  size = config.data.image_size
  batch = {"image": jnp.zeros((config.data.batch_size, size, size, 1)),
           "label": jnp.zeros((config.data.batch_size,), jnp.int32)}
  return method.init(jax.random.key(seed), batch)


def test_style_groups():
  assert stylegan2.style_groups(3) == (("coarse", 0, 2), ("middle", 2, 4), ("fine", 4, 6))
  assert stylegan2.style_groups(9) == (("coarse", 0, 6), ("middle", 6, 12), ("fine", 12, 18))
  assert stylegan2.style_groups(2) == (("coarse", 0, 2), ("fine", 2, 4))


def test_truncation_at_psi_zero_renders_the_average_w_for_every_z():
  method, config = _method()
  state = _state(method, config)
  w_avg = jax.random.normal(jax.random.key(5), (method.generator.w_dim,))
  state = state.replace(model_state={**state.model_state, "w_avg": w_avg})
  params = state.ema_params["generator"]
  z = jax.random.normal(jax.random.key(1), (6, method.z_dim)) * 3
  key = jax.random.key(2)
  images = method.render(params, w_avg, z, None, key, psi=0.0, noise_mode="const")
  avg = method.synthesize(params, jnp.broadcast_to(w_avg, (1, method.num_ws, w_avg.size)),
                          key, "const")
  np.testing.assert_allclose(images, jnp.broadcast_to(avg, images.shape), rtol=1e-5,
                             atol=1e-6)
  # psi = 1 is no truncation: the plain broadcast w.
  plain = method.render(params, w_avg, z, None, key, psi=1.0, noise_mode="const")
  ws = method.broadcast(method.map(params, z))
  np.testing.assert_allclose(plain, method.synthesize(params, ws, key, "const"), rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(stylegan2.truncate(jnp.ones(3) * 4, jnp.ones(3), 0.25), 1.75)


def test_style_mixing_takes_a_suffix_of_layers_from_a_second_latent():
  method, config = _method(**{"gan.style_mixing": 1.0})
  state = _state(method, config)
  params = state.params["generator"]
  z = jax.random.normal(jax.random.key(1), (4, method.z_dim))
  w = np.asarray(method.map(params, z))
  cutoffs = set()
  for i in range(12):
    ws = np.asarray(method.mixed_ws(params, z, None, jax.random.key(i)))
    same = np.all(np.isclose(ws, w[:, None]), axis=(0, 2))          # [num_ws]
    c = int(np.argmin(same))
    assert 1 <= c < method.num_ws and same[:c].all() and not same[c:].any()
    assert np.allclose(ws[:, c:], ws[:, c:c + 1])                    # one second w per row
    cutoffs.add(c)
  assert len(cutoffs) > 1
  off, _ = _method(**{"gan.style_mixing": 0.0})
  np.testing.assert_array_equal(off.mixed_ws(params, z, None, jax.random.key(0)),
                                np.broadcast_to(w[:, None], (4, method.num_ws, w.shape[1])))


def _pl_state(mean=0.0):
  params = {"generator": {"a": jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)),
                                           jnp.float32)},
            "discriminator": {"b": jnp.zeros(())}}
  tx = per_network({"generator": optax.sgd(0.1), "discriminator": optax.sgd(0.1)})
  return TrainState.create(params=params, tx=tx, rng=jax.random.key(0),
                           model_state={"generator": {}, "discriminator": {},
                                        "path_length": {"mean": jnp.asarray(mean)}})


def test_w_space_path_length_against_finite_differences_and_numpy():
  """Synthesis ws [B, L, 3] -> images [B, 2, 2, 1] through tanh(ws A) (a nonlinear map);
  mapping z -> ws = [z, 2 z] (L = 2). The gradient J^T y is checked by central differences
  and the penalty by NumPy on the first B / 2 examples (batch_shrink 2)."""
  state = _pl_state(mean=0.3)

  def synthesis(params, model_state, ws, conditions=None, *, train):
    del conditions, train
    out = jnp.tanh(jnp.einsum("bld,dk->bk", ws, params["a"]))
    return out.reshape(-1, 2, 2, 1), model_state

  def mapping(params, model_state, z, conditions):
    del params, model_state, conditions
    return jnp.stack([z, 2.0 * z], axis=1)

  reg = updates.path_length(synthesis, weight=2.0, decay=0.1, every=4, mapping=mapping,
                            batch_shrink=2)
  z = jax.random.normal(jax.random.key(1), (6, 3))
  rng = jax.random.key(7)
  penalty, ms = reg.fn(state.params, state.model_state, {"z": z}, rng)

  a = np.asarray(state.params["generator"]["a"], np.float64)
  zz = np.asarray(z, np.float64)[:3]
  ws = np.stack([zz, 2 * zz], 1)
  y = np.asarray(jax.random.normal(rng, (3, 2, 2, 1))).reshape(3, 4) / math.sqrt(4)
  f = lambda v: np.sum(np.tanh(np.einsum("bld,dk->bk", v, a)) * y)  # noqa: E731
  eps = 1e-5
  grads = np.zeros_like(ws)
  for idx in np.ndindex(ws.shape):
    d = np.zeros_like(ws)
    d[idx] = eps
    grads[idx] = (f(ws + d) - f(ws - d)) / (2 * eps)
  lengths = np.sqrt(np.mean(np.sum(grads ** 2, -1), -1))
  new_mean = 0.3 + 0.1 * (lengths.mean() - 0.3)
  np.testing.assert_allclose(float(ms["path_length"]["mean"]), new_mean, rtol=1e-4)
  np.testing.assert_allclose(float(penalty), 2.0 * np.mean((lengths - new_mean) ** 2),
                             rtol=1e-4)


def test_lazy_terms_enter_the_loss_scaled_by_their_interval_on_due_steps_only():
  """The generator's gradient on a due step is that of loss + k * penalty, elsewhere of the
  loss alone (the penalty's own gradient computed apart)."""
  state = _pl_state()

  def synthesis(params, model_state, x, conditions=None, *, train):
    del conditions, train
    return jnp.tanh(x @ params["a"]).reshape(-1, 2, 2, 1), model_state

  reg = updates.path_length(synthesis, weight=1.0, every=4)
  d_apply = lambda p, ms, x, c=None, *, train: (jnp.sum(x, axis=(1, 2, 3)), ms)  # noqa: E731
  z = jax.random.normal(jax.random.key(1), (4, 3))
  for step in (0, 1, 4):
    rng = jax.random.key(3)
    new, metrics = updates.generator_update(state, synthesis, d_apply, z, rng=rng, step=step,
                                            regularizers=(reg,))

    def loss(params):
      fake = synthesis(params["generator"], {}, z, train=True)[0]
      return jnp.mean(jax.nn.softplus(-d_apply(None, {}, fake, train=True)[0]))

    def pen(params):
      return reg.fn(params, state.model_state, {"z": z}, jax.random.fold_in(rng, 1))[0]

    due = step % 4 == 0
    g = jax.grad(loss)(state.params)["generator"]["a"]
    if due:
      g = g + 4 * jax.grad(pen)(state.params)["generator"]["a"]
    np.testing.assert_allclose(new.params["generator"]["a"],
                               state.params["generator"]["a"] - 0.1 * g, rtol=1e-5, atol=1e-6)
    assert float(metrics["pl_applied"]) == float(due)


def test_bad_configuration_is_a_clear_error():
  config = load_experiment("gan/stylegan2_digits", "smoke")
  config.model.features = (4, 4, 4)
  with pytest.raises(ValueError, match="2 blocks"):
    load_method(config)
  config = load_experiment("gan/stylegan2_digits", "smoke")
  config.gan.n_critic = 2
  with pytest.raises(ValueError, match="one discriminator step"):
    load_method(config)
  with pytest.raises(ValueError, match="probability"):
    _method(**{"gan.style_mixing": 1.5})


def test_smoke_run_through_the_loop(tmp_path):
  """Train 4 steps (R1 and PL due at step 0), sample at psi 0.7 with the style-mixing figure,
  eval FID/P&R/PPL at psi 0.7 and 1."""
  config = load_experiment("gan/stylegan2_digits", "smoke")
  workdir = str(tmp_path / "run")
  state = jgen.run.main(config, workdir=workdir, mode="train")
  assert int(state.step) == 4
  assert float(state.model_state["path_length"]["mean"]) > 0
  assert np.abs(np.asarray(state.model_state["w_avg"])).sum() > 0
  config.sample.truncation = 0.7
  paths = jgen.run.main(config, workdir=workdir, mode="sample")
  assert "psi0.7" in paths["png"] and os.path.exists(paths["style_mixing"])
  images = np.load(paths["npz"])["images"]
  assert images.shape == (config.sample.num, 8, 8, 1) and images.std() > 0
  result = jgen.run.main(config, workdir=workdir, mode="eval")
  for key in ("sample_metrics", "sample_metrics_psi1"):
    m = result[key]
    assert {"fid", "precision", "recall", "ppl"} <= set(m) and np.isfinite(m["ppl"])
  with open(os.path.join(workdir, "eval_step4.json")) as f:
    assert "sample_metrics_psi1" in json.load(f)


@pytest.mark.slow  # ~60 s on 2 cores
def test_conditional_smoke_run(tmp_path):
  config = load_experiment("gan/stylegan2_digits", "cond,smoke")
  state = jgen.run.main(config, workdir=str(tmp_path), mode="train")
  assert "cmap" in state.params["discriminator"]
  paths = jgen.run.main(config, workdir=str(tmp_path), mode="sample")
  assert (np.load(paths["npz"])["labels"] == np.arange(config.sample.num) % 10).all()


@pytest.mark.parametrize("arg", [None, "cond"])
def test_cifar_config_builds(arg):
  """stylegan2-ada's cifar configuration traces (init, a step with ADA and lazy R1, sampling)
  at its full size without running it; 512 channels at every resolution."""
  config = load_experiment("gan/stylegan2_cifar", arg)
  m = load_method(config)
  assert m.ada and m.pl_weight == 0 and m.style_mixing == 0 and m.r1_every == 16
  batch = {"image": jax.ShapeDtypeStruct((64, 32, 32, 3), jnp.float32),
           "label": jax.ShapeDtypeStruct((64,), jnp.int32)}
  state = jax.eval_shape(m.init, jax.random.key(0), batch)
  conv0 = state.params["generator"]["synthesis"]["b3_conv0"]["conv"]["kernel"]
  assert conv0.shape == (3, 3, 512, 512)
  assert len(state.params["generator"]["mapping"]) == 2 + (arg == "cond")
  _, metrics = jax.eval_shape(m.train_step, state, batch, jax.random.key(1))
  assert {"g_loss", "r1", "ada_p"} <= set(metrics)
  images = jax.eval_shape(lambda s, r: m.sample(s, r, 8), state, jax.random.key(1))
  assert images.shape == (8, 32, 32, 3)


@pytest.mark.slow  # ~60 s on 2 cores
def test_cifar_smoke_run_with_ada(tmp_path):
  config = load_experiment("gan/stylegan2_cifar", "smoke")
  state = jgen.run.main(config, workdir=str(tmp_path), mode="train")
  assert int(state.step) == 2 and "ada" in state.model_state
