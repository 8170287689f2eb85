"""Trainable-parameter rules and several EMAs, against hand-computed updates."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jgen.train import rules as rules_lib
from jgen.train.state import EmaSpec, TrainState, per_network


def _params():
  k = jax.random.split(jax.random.key(0), 3)
  return {"base": {"w": jax.random.normal(k[0], (3, 3)), "b": jnp.zeros(3)},
          "lora": {"a": jax.random.normal(k[1], (3, 2)), "b": jax.random.normal(k[2], (2, 3))}}


def _loss(params, x):
  h = x @ params["base"]["w"] + params["base"]["b"]
  h = h + x @ params["lora"]["a"] @ params["lora"]["b"]
  return jnp.mean(jnp.square(h - 1.0)), {}


def test_parse_rules():
  assert rules_lib.parse_rules("(('lora/.*', 1.0), ('.*', 'frozen'))") == (
      ("lora/.*", 1.0), (".*", None))
  assert rules_lib.parse_rules(("x", 2)) == (("x", 2.0),)
  assert rules_lib.parse_rules(None) == ()
  for bad in ("((1, 2),)", "(('x', -1.0),)", "(('[', 1.0),)", "((x", "(('x', 'thaw'),)"):
    with pytest.raises(ValueError):
      rules_lib.parse_rules(bad)


def test_first_match_wins_and_unused_rule_is_an_error():
  paths = ["base/w", "base/b", "lora/a"]
  got = rules_lib.leaf_multipliers(paths, (("base/w", 0.5), ("base/.*", None)))
  assert got == {"base/w": 0.5, "base/b": None, "lora/a": 1.0}
  with pytest.raises(ValueError, match="match no parameter"):
    rules_lib.leaf_multipliers(paths, (("base/.*", None), ("base/w", 0.5)))
  with pytest.raises(ValueError, match="'unet/.*'"):
    rules_lib.leaf_multipliers(paths, (("unet/.*", None),))


def test_only_lora_leaves_train():
  params = _params()
  state = TrainState.create(params=params, tx=optax.adam(1e-2), rng=jax.random.key(1),
                            ema_decay=0.9, rules=(("lora/.*", 1.0), (".*", "frozen")))
  # Optimizer state and EMA hold the trainable leaves only.
  assert set(rules_lib.flat(state.opt_state[0].mu)) == {"lora/a", "lora/b"}
  assert set(rules_lib.flat(state.emas["ema"])) == {"lora/a", "lora/b"}
  step = jax.jit(lambda s, x: s.gradient_step(_loss, x))
  x = jax.random.normal(jax.random.key(2), (8, 3))
  for _ in range(3):
    state, _ = step(state, x)
  np.testing.assert_array_equal(state.params["base"]["w"], params["base"]["w"])
  np.testing.assert_array_equal(state.params["base"]["b"], params["base"]["b"])
  assert not np.allclose(state.params["lora"]["a"], params["lora"]["a"])
  # The lora leaves equal plain Adam on the lora subtree alone.
  tx = optax.adam(1e-2)
  lora, opt = params["lora"], tx.init(params["lora"])
  for _ in range(3):
    g = jax.grad(lambda l: _loss({"base": params["base"], "lora": l}, x)[0])(lora)
    u, opt = tx.update(g, opt, lora)
    lora = optax.apply_updates(lora, u)
  for k in lora:
    np.testing.assert_allclose(state.params["lora"][k], lora[k], rtol=1e-6, atol=1e-7)


def test_learning_rate_multiplier_scales_sgd_updates():
  params = _params()
  lr, mult = 0.1, 0.25
  state = TrainState.create(params=params, tx=optax.sgd(lr), rng=jax.random.key(1),
                            rules=(("base/w", mult),))
  x = jnp.ones((4, 3))
  new, metrics = state.gradient_step(_loss, x)
  g = jax.grad(lambda p: _loss(p, x)[0])(params)
  np.testing.assert_allclose(new.params["base"]["w"], params["base"]["w"] - lr * mult *
                             g["base"]["w"], rtol=1e-6)
  np.testing.assert_allclose(new.params["lora"]["a"], params["lora"]["a"] - lr *
                             g["lora"]["a"], rtol=1e-6)
  assert np.isfinite(metrics["grad_norm"])


def test_two_emas_with_their_own_decays_and_subtrees():
  params = {"g": {"w": jnp.ones(2)}, "d": {"w": jnp.ones(2)}}
  specs = (EmaSpec("ema", 0.5, False, "g/.*"), EmaSpec("target", 0.9, False, ".*"))
  state = TrainState.create(params=params, tx=optax.sgd(1.0), rng=jax.random.key(0), emas=specs)
  grads = {"g": {"w": jnp.full(2, 2.0)}, "d": {"w": jnp.full(2, 4.0)}}
  state = state.apply_gradients(grads)
  # params: g = 1 - 2 = -1, d = 1 - 4 = -3; ema = 0.5*1 + 0.5*(-1) = 0; target = 0.9 + 0.1*p.
  np.testing.assert_allclose(state.emas["ema"]["g"]["w"], [0.0, 0.0])
  assert "d" not in state.emas["ema"]
  np.testing.assert_allclose(state.emas["target"]["g"]["w"], [0.8, 0.8], rtol=1e-6)
  np.testing.assert_allclose(state.emas["target"]["d"]["w"], [0.6, 0.6], rtol=1e-6)
  np.testing.assert_allclose(state.ema_params["d"]["w"], [-3.0, -3.0])  # not averaged
  with pytest.raises(ValueError, match="EMA 'x'"):
    TrainState.create(params=params, tx=optax.sgd(1.0), rng=jax.random.key(0),
                      emas=(EmaSpec("x", 0.5, False, "nope/.*"),))


def test_per_network_update_touches_one_network_and_its_ema():
  params = {"generator": {"w": jnp.ones(2)}, "discriminator": {"w": jnp.ones(2)}}
  tx = per_network({"generator": optax.sgd(1.0), "discriminator": optax.sgd(0.5)})
  state = TrainState.create(params=params, tx=tx, rng=jax.random.key(0),
                            emas=(EmaSpec("ema", 0.5, False, "generator/.*"),))
  state = state.apply_gradients({"w": jnp.ones(2)}, network="discriminator", count_step=False)
  np.testing.assert_allclose(state.params["discriminator"]["w"], [0.5, 0.5])
  np.testing.assert_allclose(state.params["generator"]["w"], [1.0, 1.0])
  np.testing.assert_allclose(state.emas["ema"]["generator"]["w"], [1.0, 1.0])
  assert int(state.step) == 0
  state = state.apply_gradients({"w": jnp.ones(2)}, network="generator")
  np.testing.assert_allclose(state.params["generator"]["w"], [0.0, 0.0])
  np.testing.assert_allclose(state.emas["ema"]["generator"]["w"], [0.5, 0.5])
  assert int(state.step) == 1
  frozen_d = TrainState.create(params=params, tx=tx, rng=jax.random.key(0),
                               rules=(("discriminator/.*", "frozen"),))
  assert set(frozen_d.opt_state) == {"generator"}
