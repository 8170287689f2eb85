"""ADA's augmentation pipeline against NumPy: p = 0 is the identity, flips / 90-degree
rotations / integer shifts are exact pixel permutations with mirrored borders, each operation
fires with probability p, colour maps are the stated affine maps, cutout zeroes a half-side
square, the pipeline is linear in the image (so the generator's gradient passes), and the p
update is stylegan2-ada's formula."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen.gan import ada
from jgen.train import load_method
from tests.conftest import load_experiment


def _images(b=8, h=12, w=12, c=1, seed=0):
  return jax.random.uniform(jax.random.key(seed), (b, h, w, c), minval=-1.0, maxval=1.0)


def test_p_zero_is_the_identity():
  x = _images(c=3)
  np.testing.assert_allclose(np.asarray(ada.augment(x, jax.random.key(1), 0.0)), np.asarray(x),
                             atol=1e-6)


def test_xflip_with_p_one_is_numpys_flip():
  x = _images()
  out = ada.augment(x, jax.random.key(2), 1.0, ops=("xflip",))
  np.testing.assert_allclose(np.asarray(out), np.flip(np.asarray(x), axis=2), atol=1e-5)


def test_rotate90_gives_one_of_numpys_four_rotations():
  x = np.asarray(_images(b=16))
  out = np.asarray(ada.augment(jnp.asarray(x), jax.random.key(3), 1.0, ops=("rotate90",)))
  seen = set()
  for i in range(len(x)):
    errs = [np.abs(out[i] - np.rot90(x[i], k, axes=(0, 1))).max() for k in range(4)]
    assert min(errs) < 1e-5
    seen.add(int(np.argmin(errs)))
  assert len(seen) >= 3  # k is drawn per example


def test_integer_translation_is_a_mirror_padded_shift():
  x = np.asarray(_images(b=12, h=16, w=16))
  out = np.asarray(ada.augment(jnp.asarray(x), jax.random.key(4), 1.0, ops=("xint",)))
  padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")  # torch's 'reflect'
  for i in range(len(x)):
    errs = {(dy, dx): np.abs(out[i] - padded[i, 2 + dy:18 + dy, 2 + dx:18 + dx]).max()
            for dy in range(-2, 3) for dx in range(-2, 3)}  # |t| <= 0.125 * 16 = 2 pixels
    assert min(errs.values()) < 1e-5, i


def test_each_operation_fires_with_probability_p():
  x = _images(b=2000, h=4, w=4)
  out = np.asarray(ada.augment(x, jax.random.key(5), 0.3, ops=("xflip",)))
  flipped = np.all(np.abs(out - np.flip(np.asarray(x), axis=2)) < 1e-5, axis=(1, 2, 3))
  assert abs(flipped.mean() - 0.3) < 0.035  # 3.4 standard errors


def test_colour_maps_are_per_example_affine_and_saturation_keeps_luma():
  x = _images(b=6, c=1)
  out = np.asarray(ada.augment(x, jax.random.key(6), 1.0, ops=("brightness", "contrast")))
  for i in range(6):
    a = np.stack([np.asarray(x[i]).ravel(), np.ones(x[i].size)], -1)
    coef, res, *_ = np.linalg.lstsq(a, out[i].ravel(), rcond=None)
    assert res.size == 0 or res[0] < 1e-8  # out = c x + b exactly
  rgb = _images(b=6, c=3)
  sat = np.asarray(ada.augment(rgb, jax.random.key(7), 1.0, ops=("saturation",)))
  np.testing.assert_allclose(sat.mean(-1), np.asarray(rgb).mean(-1), atol=1e-5)
  assert np.abs(sat - np.asarray(rgb)).max() > 0.01


def test_cutout_zeroes_a_half_side_square():
  x = _images(b=20, h=16, w=16) * 0.5 + 0.75  # no zeros of its own
  out = np.asarray(ada.augment(x, jax.random.key(8), 1.0, ops=("cutout",)))
  changed = np.abs(out - np.asarray(x)).max(-1) > 0
  assert np.all(out[changed] == 0.0)
  for i in range(20):
    rows, cols = np.nonzero(changed[i])
    assert rows.max() - rows.min() + 1 <= 8 and cols.max() - cols.min() + 1 <= 8
    assert changed[i].sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)


def test_pipeline_is_linear_in_the_image_and_differentiable():
  geometric = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac", "cutout")
  a, b = _images(seed=1), _images(seed=2)
  key = jax.random.key(9)
  aug = lambda x: ada.augment(x, key, 0.8, ops=geometric)
  np.testing.assert_allclose(np.asarray(aug(2.0 * a - b)), np.asarray(2.0 * aug(a) - aug(b)),
                             atol=1e-5)
  weights = _images(seed=3)
  grad = jax.grad(lambda x: jnp.sum(aug(x) * weights))(a)
  # <aug(a), w> is linear, so its gradient g satisfies <g, b> = <aug(b), w>.
  np.testing.assert_allclose(float(jnp.sum(grad * b)), float(jnp.sum(aug(b) * weights)),
                             rtol=1e-4)


def test_unknown_operation_is_an_error():
  with pytest.raises(ValueError, match="unknown ADA operation"):
    ada.augment(_images(), jax.random.key(0), 0.5, ops=("xflip", "blur"))


def test_p_update_is_stylegan2_adas():
  step = 64 * 4 / 500_000
  assert float(ada.adjust_p(0.2, 0.9, batch_size=64, interval=4)) == pytest.approx(0.2 + step)
  assert float(ada.adjust_p(0.2, 0.1, batch_size=64, interval=4)) == pytest.approx(0.2 - step)
  assert float(ada.adjust_p(0.0, 0.0, batch_size=64, interval=4)) == 0.0
  assert float(ada.adjust_p(1.0, 1.0, batch_size=64, interval=4)) == 1.0
  assert float(ada.overfitting_heuristic(jnp.asarray([2.0, -1.0, 3.0, 0.5]))) == 0.5


# ------------------------------------------------------------------ in the GAN step


def _gan(**ada_fields):
  config = load_experiment("gan/dcgan_digits", "smoke")
  with config.unlocked():
    for k, v in ada_fields.items():
      config.gan[k] = v
  method = load_method(config)
  batch = {"image": _images(b=config.data.batch_size, h=8, w=8, seed=4),
           "label": jnp.zeros((config.data.batch_size,), jnp.int32)}
  state = method.init(jax.random.key(0), batch)
  return method, state, batch


def test_ada_at_fixed_p_zero_is_the_plain_gan_step():
  plain, s0, batch = _gan()
  with_ada, s1, _ = _gan(ada=True, ada_p=0.0, ada_target=None)
  step = jax.jit(lambda m, s: m.train_step(s, batch, jax.random.key(3)), static_argnums=0)
  (a, ma), (b, mb) = step(plain, s0), step(with_ada, s1)
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6)
  assert float(mb["ada_p"]) == 0.0 and "ada_p" not in ma


def test_ada_moves_p_by_the_formula_every_interval():
  method, state, batch = _gan(ada=True, ada_p=0.5, ada_target=0.6, ada_interval=2, ada_kimg=1.0)
  step = jax.jit(lambda s: method.train_step(s, batch, jax.random.key(5)))
  s1, m1 = step(state)
  assert float(s1.model_state["ada"]["p"]) == 0.5  # not due yet
  s2, m2 = step(s1)
  r_t = (float(m1["real_sign"]) + float(m2["real_sign"])) / 2
  assert float(m2["ada_rt"]) == pytest.approx(r_t, abs=1e-6)
  b = batch["image"].shape[0]  # one critic step per step
  want = float(np.clip(0.5 + np.sign(r_t - 0.6) * b * 2 / 1000.0, 0.0, 1.0))
  assert float(s2.model_state["ada"]["p"]) == pytest.approx(want, abs=1e-6)
  assert float(s2.model_state["ada"]["rt_count"]) == 0.0
  assert float(m2["ada_p"]) != 0.5 or want == 0.5  # p moved


def test_bad_ada_settings_are_errors():
  with pytest.raises(ValueError, match="gan.ada_ops"):
    _gan(ada=True, ada_ops="xflip,blur")
  with pytest.raises(ValueError, match="ada_p"):
    _gan(ada=True, ada_p=1.5)
