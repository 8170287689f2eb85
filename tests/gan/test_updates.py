"""The pure adversarial updates against hand-written jax.grad + optax references: the composed
GAN step, lazy regularizers on exactly their steps, grouped networks."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jgen.gan import adversarial, updates
from jgen.nn.gan import MLPDiscriminator, MLPGenerator
from jgen.train.state import EmaSpec, TrainState, per_network

B, Z, X = 6, 3, 2
ADAM = dict(learning_rate=1e-2, b1=0.5, b2=0.9)


def _close(a, b, tol=1e-6):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(x, y, rtol=tol, atol=tol)


def _adam_step(params, grads, opt):
  tx = optax.adam(**ADAM)
  u, opt = tx.update(grads, opt, params)
  return optax.apply_updates(params, u), opt


@pytest.mark.parametrize("loss,clip", [("non_saturating", 0.0), ("wasserstein", 0.05)])
def test_gan_step_equals_hand_computed_update(loss, clip):
  """One GAN.train_step (n_critic = 1) = one D step then one G step then the EMA, written with
  plain jax.grad + optax (keys as documented in jgen.gan.adversarial)."""
  g, d = MLPGenerator(out_dim=X, hidden=(8, 8)), MLPDiscriminator(hidden=(8, 8))
  gan = adversarial.GAN(generator=g, discriminator=d, tx_g=optax.adam(**ADAM),
                        tx_d=optax.adam(**ADAM), loss=loss, z_dim=Z, clip=clip,
                        ema_decay=0.999, ema_warmup=True)
  real = jax.random.normal(jax.random.key(5), (B, X))
  state = gan.init(jax.random.key(0), {"image": real})
  rng = jax.random.key(1)
  new, metrics = jax.jit(gan.train_step)(state, {"image": real}, rng)

  gp0, dp0 = state.params["generator"], state.params["discriminator"]
  G = lambda p, z: g.apply({"params": p}, z)
  D = lambda p, x: d.apply({"params": p}, x)
  if loss == "non_saturating":
    d_loss = lambda r, f: jnp.mean(jax.nn.softplus(-r)) + jnp.mean(jax.nn.softplus(f))
    g_loss = lambda f: jnp.mean(jax.nn.softplus(-f))
  else:
    d_loss = lambda r, f: jnp.mean(f) - jnp.mean(r)
    g_loss = lambda f: -jnp.mean(f)
  # D step on fixed fakes.
  z_rng, _ = jax.random.split(jax.random.fold_in(rng, 0))
  fake = G(gp0, jax.random.normal(z_rng, (B, Z)))
  grads = jax.grad(lambda p: d_loss(D(p, real), D(p, fake)))(dp0)
  dp1, d_opt = _adam_step(dp0, grads, optax.adam(**ADAM).init(dp0))
  if clip:
    dp1 = jax.tree.map(lambda p: jnp.clip(p, -clip, clip), dp1)
  # G step against the updated D.
  z = jax.random.normal(jax.random.fold_in(rng, 1), (B, Z))
  grads = jax.grad(lambda p: g_loss(D(dp1, G(p, z))))(gp0)
  gp1, g_opt = _adam_step(gp0, grads, optax.adam(**ADAM).init(gp0))
  decay = min(0.999, 1.0 / 10.0)  # warm-up at step 0
  ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, gp0, gp1)

  _close(new.params["discriminator"], dp1)
  _close(new.params["generator"], gp1)
  _close(new.emas["ema"]["generator"], ema)
  _close(new.opt_state["discriminator"], d_opt)
  _close(new.opt_state["generator"], g_opt)
  assert int(new.step) == 1 and set(new.emas["ema"]) == {"generator"}
  np.testing.assert_allclose(metrics["d_loss"], d_loss(D(dp0, real), D(dp0, fake)), rtol=1e-6)


class _Affine(nn.Module):
  @nn.compact
  def __call__(self, x, labels=None, *, train=False):
    del labels, train
    h = jnp.tanh(nn.Dense(4)(x))
    return nn.Dense(1)(h)[:, 0]


def test_lazy_r1_runs_exactly_every_k_steps():
  """r1(every=3): penalty (scaled by 3) on steps 0, 3, 6 only; params = a hand reference."""
  k, gamma = 3, 2.0
  d = _Affine()
  d_apply = updates.module_apply(d)
  real = jax.random.normal(jax.random.key(1), (B, X))
  fake = jax.random.normal(jax.random.key(2), (B, X)) + 1.0
  params = {"discriminator": d.init(jax.random.key(0), real)["params"]}
  state = TrainState.create(params=params, tx=per_network({"discriminator": optax.adam(**ADAM)}),
                            rng=jax.random.key(0), model_state={"discriminator": {}})
  reg = updates.r1(d_apply, gamma=gamma, every=k)

  @jax.jit
  def step(state, i):
    return updates.discriminator_update(state, d_apply, real, fake, rng=jax.random.key(3),
                                        step=i, regularizers=(reg,))

  D = lambda p, x: d.apply({"params": p}, x)

  def ref_loss(p, lazy):
    adv = jnp.mean(jax.nn.softplus(-D(p, real))) + jnp.mean(jax.nn.softplus(D(p, fake)))
    if not lazy:
      return adv
    g = jax.grad(lambda x: jnp.sum(D(p, x)))(real)
    return adv + k * 0.5 * gamma * jnp.mean(jnp.sum(g * g, -1))

  p, opt = params["discriminator"], optax.adam(**ADAM).init(params["discriminator"])
  for i in range(7):
    state, m = step(state, i)
    due = i % k == 0
    assert (float(m["r1"]) > 0) == due and float(m["r1_applied"]) == float(due)
    p, opt = _adam_step(p, jax.grad(ref_loss)(p, due), opt)
    _close(state.params["discriminator"], p, 1e-5)


def test_lazy_path_length_updates_its_mean_only_when_due():
  g = MLPGenerator(out_dim=X, hidden=(8,))
  g_apply, d_apply = updates.module_apply(g), updates.module_apply(_Affine())
  params = {"generator": g.init(jax.random.key(0), jnp.zeros((1, Z)))["params"],
            "discriminator": _Affine().init(jax.random.key(1), jnp.zeros((1, X)))["params"]}
  tx = per_network({"generator": optax.sgd(0.1), "discriminator": optax.sgd(0.1)})
  state = TrainState.create(params=params, tx=tx, rng=jax.random.key(0),
                            emas=(EmaSpec("ema", 0.9, False, "generator/.*"),),
                            model_state={"generator": {}, "discriminator": {},
                                         "path_length": {"mean": jnp.zeros(())}})
  reg = updates.path_length(g_apply, every=2)
  z = jax.random.normal(jax.random.key(2), (B, Z))
  step = jax.jit(lambda s, i: updates.generator_update(s, g_apply, d_apply, z,
                                                       rng=jax.random.key(i), step=i,
                                                       regularizers=(reg,)))
  means = []
  for i in range(4):
    before = state.params["discriminator"]
    state, m = step(state, i)
    means.append(float(state.model_state["path_length"]["mean"]))
    assert (float(m["pl_applied"]) == 1.0) == (i % 2 == 0)
    _close(state.params["discriminator"], before, 0.0)  # D untouched by G's update
  assert means[0] > 0 and means[1] == means[0] and means[2] != means[1] and means[3] == means[2]
  assert int(state.step) == 4


def test_grouped_update_trains_only_its_networks_with_their_own_optimizers():
  """update(networks=("a", "b")) from one loss: a with sgd(1), b with sgd(0.5), c untouched,
  EMA only over a; projections after the step."""
  params = {"a": {"w": jnp.ones(2)}, "b": {"w": jnp.ones(2)}, "c": {"w": jnp.ones(2)}}
  tx = per_network({"a": optax.sgd(1.0), "b": optax.sgd(0.5), "c": optax.sgd(1.0)})
  state = TrainState.create(params=params, tx=tx, rng=jax.random.key(0),
                            emas=(EmaSpec("ema", 0.5, False, "a/.*"),))

  def loss_fn(p, ms, rng):
    del rng
    return jnp.sum(p["a"]["w"] * p["b"]["w"] * p["c"]["w"]), (ms, {})

  new, m = updates.update(state, loss_fn, networks=("a", "b"), rng=jax.random.key(1),
                          projections={"b": lambda p: jax.tree.map(lambda x: x + 10.0, p)})
  np.testing.assert_allclose(new.params["a"]["w"], 0.0)
  np.testing.assert_allclose(new.params["b"]["w"], 10.5)
  np.testing.assert_allclose(new.params["c"]["w"], 1.0)
  np.testing.assert_allclose(new.emas["ema"]["a"]["w"], 0.5)
  np.testing.assert_allclose(m["grad_norm"], 2.0)
  assert int(new.step) == 0


def test_regularizer_interval_must_be_positive():
  with pytest.raises(ValueError, match="every"):
    updates.Regularizer("r1", lambda *a: None, every=0)
