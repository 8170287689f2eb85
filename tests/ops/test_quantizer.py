"""The vector quantizer against brute force and hand-computed EMA updates."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jgen.ops import quantizer as vq
from jgen.autoencoder.vqvae import masked_optimizer


def test_nearest_code_matches_brute_force():
  rng = np.random.default_rng(0)
  codebook = rng.normal(size=(37, 5)).astype(np.float32)
  z = rng.normal(size=(3, 4, 4, 5)).astype(np.float32)
  brute = np.argmin(((z[..., None, :] - codebook) ** 2).sum(-1), axis=-1)
  out = jax.jit(vq.quantize)(z, codebook)
  np.testing.assert_array_equal(out.indices, brute)
  np.testing.assert_allclose(out.z_q, codebook[brute], atol=1e-6)
  np.testing.assert_allclose(out.codebook_loss, np.mean((z - codebook[brute]) ** 2), rtol=1e-5)
  np.testing.assert_allclose(out.commitment_loss, out.codebook_loss, rtol=1e-6)


def test_gradients_pass_straight_through_and_split_between_the_losses():
  codebook = jnp.array([[0.0, 0.0], [1.0, 1.0], [-1.0, 2.0]])
  z = jnp.array([[0.2, 0.1], [0.9, 1.4], [-0.8, 1.5]])
  w = jnp.array([[1.0, -2.0], [0.5, 3.0], [2.0, 1.0]])
  g = jax.grad(lambda z: jnp.sum(w * vq.quantize(z, codebook).z_q))(z)
  np.testing.assert_allclose(g, w)  # identity through the quantizer
  g_cb = jax.grad(lambda c: vq.quantize(z, c).codebook_loss)(codebook)
  np.testing.assert_allclose(g_cb, 2 * (codebook - z) / z.size, rtol=1e-6)
  assert not np.any(jax.grad(lambda c: vq.quantize(z, c).commitment_loss)(codebook))
  np.testing.assert_allclose(jax.grad(lambda z: vq.quantize(z, codebook).commitment_loss)(z),
                             2 * (z - codebook) / z.size, rtol=1e-6)


def test_ema_update_equals_the_formula_by_hand():
  counts = jnp.array([2.0, 1.0, 0.5])
  sums = jnp.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
  z = jnp.array([[1.0, 1.0], [3.0, 1.0], [0.0, 2.0]])
  idx = jnp.array([0, 0, 1])
  d, eps = 0.9, 0.1
  new_counts, new_sums, codebook = vq.ema_codebook_update(counts, sums, z, idx, decay=d,
                                                          epsilon=eps)
  # N = 0.9 [2, 1, .5] + 0.1 [2, 1, 0] = [2.0, 1.0, 0.45]
  np.testing.assert_allclose(new_counts, [2.0, 1.0, 0.45], rtol=1e-6)
  # m_0 = 0.9 [2, 0] + 0.1 ([1, 1] + [3, 1]) = [2.2, 0.2]; m_1 = [0, .9] + .1 [0, 2] = [0, 1.1]
  np.testing.assert_allclose(new_sums, [[2.2, 0.2], [0.0, 1.1], [0.9, 0.9]], rtol=1e-6)
  n = 3.45
  smoothed = (np.array([2.0, 1.0, 0.45]) + eps) / (n + 3 * eps) * n
  np.testing.assert_allclose(codebook, np.array(new_sums) / smoothed[:, None], rtol=1e-5)


def test_perplexity_and_dead_code_restart():
  perplexity, used = vq.codebook_perplexity(jnp.array([0, 1, 2, 3] * 4), 8)
  np.testing.assert_allclose([perplexity, used], [4.0, 0.5], rtol=1e-5)
  perplexity, used = vq.codebook_perplexity(jnp.zeros((10,), jnp.int32), 8)
  np.testing.assert_allclose([perplexity, used], [1.0, 0.125], rtol=1e-5)

  codebook = jnp.zeros((4, 2))
  counts = jnp.array([10.0, 10.0, 0.01, 10.0])
  z = jnp.full((5, 2), 7.0)
  new_cb, new_counts, new_sums, n = vq.restart_dead_codes(
      jax.random.key(0), codebook, counts, codebook, z, threshold=0.1)
  assert int(n) == 1
  np.testing.assert_allclose(new_cb[2], [7.0, 7.0])
  np.testing.assert_allclose(np.asarray(new_cb)[[0, 1, 3]], 0.0)
  np.testing.assert_allclose(new_counts[2], counts.mean(), rtol=1e-6)
  np.testing.assert_allclose(new_sums[2], 7.0 * counts.mean(), rtol=1e-6)
  same = vq.restart_dead_codes(jax.random.key(0), codebook, counts, codebook, z, threshold=0.1,
                               active=False)
  np.testing.assert_array_equal(same[0], codebook)


def test_masked_optimizer_masks_only_the_ema_codebook():
  params = {"encoder": jnp.ones(2), "decoder": jnp.ones(2), "codebook": jnp.ones(2)}
  grads = jax.tree.map(jnp.ones_like, params)
  for learn, moved in ((True, True), (False, False)):
    tx = masked_optimizer(optax.sgd(0.5), learn_codebook=learn)
    updates, _ = tx.update(grads, tx.init(params), params)
    assert np.all(updates["encoder"] == -0.5)
    assert np.all(updates["decoder"] == -0.5)
    assert bool(np.all(updates["codebook"] == -0.5)) == moved
