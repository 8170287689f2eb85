"""Sample metrics over a feature net, the reference caches, the config boundary and
``--mode=eval`` of a tiny trained model."""

import json
import logging
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import jgen.run
from jgen import data as jdata
from jgen.metrics import (classifier_score, evaluate, fid, mmd, networks, precision_recall,
                          weights)
from jgen.train import Reconstructs, Samples, inference, inputs
from jgen.train.config import base_config
from tests.conftest import load_experiment
from tests.metrics.conftest import random_domain_net


def digits(n, seed=0):
  images = jdata.load_source("digits", split="train").images
  return images[np.random.default_rng(seed).permutation(len(images))[:n]]


def test_parse_metrics_and_auto_features():
  assert evaluate.parse_metrics("fid, IS,pr,fid") == ("fid", "is", "pr")
  assert evaluate.parse_metrics("") == evaluate.parse_metrics(None) == ()
  assert evaluate.parse_metrics(["kid", "dc"]) == ("kid", "dc")
  assert evaluate.parse_metrics("rfid,lpips") == ("rfid", "lpips")
  with pytest.raises(ValueError, match="unknown sample metric"):
    evaluate.parse_metrics("fid,lipips")
  assert evaluate.auto_features("digits") == "domain:digits"
  assert evaluate.auto_features("idx:/usr/share/datasets/fashion-mnist") == (
      "domain:fashion_mnist")
  assert evaluate.auto_features("tfds:cifar10") == "inception"


def test_image_metrics_equal_the_metric_functions():
  net = random_domain_net(batch_size=16)
  real, fake = digits(60, seed=1), digits(50, seed=2) // 2  # darker "samples"
  ref_out, fake_out = net(real), net(fake)
  ref_stats = fid.GaussianStats(net.feature_dim).update(ref_out["features"])
  chunks = [fake[:7], fake[7:30], fake[30:]]  # streamed in uneven chunks
  got = evaluate.image_metrics(iter(chunks), net, metrics=evaluate.METRICS, batch_size=16,
                               reference_stats={"mu": ref_stats.mean, "sigma": ref_stats.cov},
                               reference_features=ref_out["features"], is_splits=5,
                               kid_subsets=10, kid_subset_size=40)
  fake_stats = fid.GaussianStats(net.feature_dim).update(fake_out["features"])
  assert got["num_samples"] == 50
  assert got["fid"] == pytest.approx(fid.fid_from_stats(fake_stats, ref_stats), rel=1e-6)
  assert (got["is"], got["is_std"]) == pytest.approx(
      classifier_score.inception_score(fake_out["logits"], splits=5), rel=1e-6)
  assert (got["kid"], got["kid_std"]) == pytest.approx(
      mmd.kid(ref_out["features"], fake_out["features"], num_subsets=10, subset_size=40),
      rel=1e-4, abs=1e-7)
  scores = precision_recall.prdc(ref_out["features"], fake_out["features"])
  assert {k: got[k] for k in scores} == scores
  assert got["fid"] > 0
  with pytest.raises(ValueError, match="reference_features"):
    evaluate.image_metrics(fake, net, metrics=("pr",))


def test_sample_metrics_draw_chunks_of_one_shape():
  net = random_domain_net(batch_size=8)
  images = digits(23).astype(np.float32) / 127.5 - 1.0
  calls = []

  def sample_fn(i, n):
    calls.append((i, n))
    return np.resize(images[i * n:], (n, *images.shape[1:]))

  stats = fid.GaussianStats(net.feature_dim).update(net(digits(40, seed=3))["features"])
  got = evaluate.sample_metrics(sample_fn, 23, net, sample_batch_size=10, metrics=("fid", "is"),
                                reference_stats=stats, is_splits=2)
  assert calls == [(0, 10), (1, 10), (2, 10)]
  direct = evaluate.image_metrics(images, net, metrics=("fid", "is"), reference_stats=stats,
                                  is_splits=2)
  # The features of each chunk come from a different batch shape, so they differ by float32
  # rounding; FID (a difference of near-equal traces) amplified that to 1.1e-9 relative on CI.
  assert got == pytest.approx(direct, rel=1e-6)


def test_sample_metrics_score_overshooting_samples_as_their_clipped_images():
  net = random_domain_net(batch_size=8)
  images = digits(20).astype(np.float32) / 127.5 - 1.0
  # An unclipped ODE sample overshoots [-1, 1]: it is scored as the clipped image it saves as.
  over = images * 4.0 + np.where(images > 0, 0.3, -0.3).astype(np.float32)
  stats = fid.GaussianStats(net.feature_dim).update(net(digits(40, seed=3))["features"])
  got = evaluate.sample_metrics(lambda i, n: over[i * n:(i + 1) * n], 20, net,
                                sample_batch_size=10, metrics=("fid",), reference_stats=stats)
  clipped = np.round((np.clip(over, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
  direct = evaluate.image_metrics(clipped, net, metrics=("fid",), reference_stats=stats)
  assert got == pytest.approx(direct, rel=1e-6)
  with pytest.raises(ValueError, match=r"must lie in \[-1, 1\]"):  # data keep the range check
    evaluate.image_metrics(over, net, metrics=("fid",), reference_stats=stats)


def test_reference_features_are_a_cached_random_subset(monkeypatch, isolated_cache):
  net = random_domain_net()
  feats = evaluate.reference_features(net, "digits", num=30, seed=5, image_size=8, channels=1)
  images = jdata.load_source("digits", split="train").images
  index = np.sort(np.random.default_rng(5).permutation(len(images))[:30])
  np.testing.assert_allclose(feats, net(images[index])["features"], rtol=1e-6)
  assert any(f.endswith("-features.npz")
             for f in os.listdir(isolated_cache / "fid_stats" / "domain-digits"))

  def unavailable(*args, **kwargs):
    raise AssertionError("the cached features should have been used")

  monkeypatch.setattr(jdata, "load_source", unavailable)
  np.testing.assert_array_equal(
      evaluate.reference_features(net, "digits", num=30, seed=5, image_size=8, channels=1), feats)


def test_reference_stats_of_max_images_are_a_seeded_random_subset():
  """Not the first N (folder sources are sorted by class): the statistics of the images that
  `subset_index` picks, another subset for another seed, and all images when N covers them."""
  net = random_domain_net()
  images = jdata.load_source("digits", split="train").images
  kw = dict(image_size=8, channels=1, cache=False)
  stats = fid.reference_stats(net, "digits", max_images=200, seed=3, **kw)
  index = fid.subset_index(len(images), 200, 3)
  assert len(index) == 200 and len(set(index)) == 200 and index.max() >= 200
  direct = fid.accumulate(net, images[index])[0]
  np.testing.assert_allclose(stats["mu"], direct.mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(stats["sigma"], direct.cov, rtol=1e-4, atol=1e-6)
  first = fid.accumulate(net, images[:200])[0]
  assert np.abs(stats["mu"] - first.mean).max() > 1e-3
  other = fid.reference_stats(net, "digits", max_images=200, seed=4, **kw)
  assert np.abs(stats["mu"] - other["mu"]).max() > 1e-3
  every = fid.reference_stats(net, "digits", max_images=10**6, seed=3, **kw)
  np.testing.assert_array_equal(fid.subset_index(len(images), 10**6, 3),
                                np.arange(len(images)))
  assert every["count"] == len(images)


def test_reference_stats_from_the_subsets_features_equal_a_network_pass(monkeypatch):
  """`features=` (what evaluate passes when the P&R features cover the same seeded subset):
  the statistics the network pass gives, without the pass; features of another count refused."""
  net = random_domain_net()
  kw = dict(image_size=8, channels=1, cache=False)
  direct = fid.reference_stats(net, "digits", max_images=200, seed=3, **kw)
  feats = evaluate.reference_features(net, "digits", num=200, seed=3, **kw)

  def no_pass(*args, **kwargs):
    raise AssertionError("the network ran although the subset's features were given")

  monkeypatch.setattr(fid, "accumulate", no_pass)
  shared = fid.reference_stats(net, "digits", max_images=200, seed=3, features=feats, **kw)
  np.testing.assert_allclose(shared["mu"], direct["mu"], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(shared["sigma"], direct["sigma"], rtol=1e-5, atol=1e-7)
  assert shared["count"] == 200
  with pytest.raises(ValueError, match="exactly that subset"):
    fid.reference_stats(net, "digits", max_images=200, seed=3, features=feats[:150], **kw)


def test_evaluate_config_off_auto_skip_and_explicit_failure(tmp_path, monkeypatch, caplog):
  config = base_config()
  assert evaluate.evaluate_config(config, lambda i, n: None) is None  # off by default
  config.eval.metrics = "fid"
  config.data.source = "folder:/nowhere"  # auto -> inception, whose weights are absent here
  monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
  monkeypatch.delenv("JGEN_INCEPTION_WEIGHTS", raising=False)
  monkeypatch.setattr(weights, "_fid_helper_file", lambda: None)
  with caplog.at_level(logging.WARNING, logger="jgen"):
    assert evaluate.evaluate_config(config, lambda i, n: None) is None
  assert "sample metrics skipped" in caplog.text and "inception" in caplog.text
  config.eval.features = "inception"
  with pytest.raises(weights.InceptionWeightsNotFoundError):
    evaluate.evaluate_config(config, lambda i, n: None)
  assert evaluate.evaluate_config(ml_collections.ConfigDict({"data": {}}), None) is None


def test_launch_eval_computes_sample_metrics_of_a_trained_model(tmp_path, monkeypatch,
                                                                isolated_cache):
  """`--mode=eval` of the DDPM smoke run: the method's loss and FID/KID/IS/P&R/D&C of its EMA
  samples against digits (an untrained domain net stands in for the trained one)."""
  config = load_experiment("ddpm/digits", "smoke")
  workdir = str(tmp_path / "run")
  jgen.run.main(config, workdir=workdir, mode="train")
  config.eval.metrics = "fid,kid,is,pr,dc"
  config.eval.num_samples = 20
  config.eval.num_reference_features = 30
  config.eval.reference_max_images = 300
  config.eval.is_splits = 2
  config.eval.kid_subsets = 5
  loaded = []

  def load(spec, **kwargs):
    loaded.append((spec, kwargs))
    return random_domain_net(batch_size=kwargs["batch_size"])

  monkeypatch.setattr(networks, "load", load)
  result = jgen.run.main(config, workdir=workdir, mode="eval")
  assert loaded == [("domain:digits", {"batch_size": 200, "source": None})]  # 'auto'
  assert result["step"] == 6 and np.isfinite(result["loss"])
  metrics = result["sample_metrics"]
  assert metrics["features"] == "domain-digits" and metrics["num_samples"] == 20
  for key in ("fid", "kid", "kid_std", "is", "is_std", "precision", "recall", "density",
              "coverage"):
    assert np.isfinite(metrics[key]), key
  assert metrics["fid"] > 0 and 1 <= metrics["is"] <= 10
  with open(os.path.join(workdir, "eval_step6.json")) as f:
    assert json.load(f) == result
  cached = os.listdir(isolated_cache / "fid_stats" / "domain-digits")
  assert len([f for f in cached if f.endswith("-features.npz")]) == 1 and len(cached) == 2

  # The FID is that of the EMA samples drawn with fold_in(key(eval.seed), i), recomputed here.
  method, mesh, state = inference.restore_for_inference(config, workdir)
  sampler = jax.jit(method.sample, static_argnums=2)
  samples = np.concatenate([np.asarray(sampler(state, jax.random.fold_in(
      jax.random.key(config.eval.seed), i), 8)) for i in range(3)])[:20]
  net = random_domain_net()
  reference = fid.reference_stats(net, "digits", image_size=8, channels=1, resize=True,
                                  max_images=300)
  again = evaluate.image_metrics(samples, net, metrics=("fid",), reference_stats=reference)
  assert again["fid"] == pytest.approx(metrics["fid"], rel=1e-5)

  # A method without evaluate() (a GAN, say): sample metrics only, and an error without them.
  config.method = "tests.metrics.sampler_method"
  config.eval.metrics = "fid"
  only = jgen.run.main(config, workdir=workdir, mode="eval")
  assert set(only) == {"step", "sample_metrics"}
  assert only["sample_metrics"]["fid"] == pytest.approx(metrics["fid"], rel=1e-6)
  config.eval.metrics = ""
  with pytest.raises(ValueError, match="no evaluate"):
    jgen.run.main(config, workdir=workdir, mode="eval")


class _Reconstructs:
  """A method that does not sample (as the AE and VQ-VAE): no `sample_fn` for its metrics."""


def _rfid_config(metrics):
  config = base_config()
  config.method = "autoencoder.ae"
  config.data.update(source="digits", image_size=8, channels=1, resize=False)
  config.eval.metrics = metrics
  config.sample.batch_size = 40
  return config


def test_sample_metrics_of_reconstructions_are_refused_before_any_features(monkeypatch):
  def no_features(*args, **kwargs):
    raise AssertionError("no feature network may load for a refused metric")

  monkeypatch.setattr(networks, "load", no_features)
  for metrics in ("fid", "kid,pr", "fid,rfid"):
    with pytest.raises(ValueError, match=r"autoencoder\.ae.*reconstructions.*metrics=rfid"):
      evaluate.evaluate_config(_rfid_config(metrics), None, method=_Reconstructs(),
                               reconstruct_fn=lambda x: x)
  with pytest.raises(ValueError, match="rfid .*reconstruct"):
    evaluate.evaluate_config(_rfid_config("rfid"), lambda i, n: None, method=object())


def test_reconstruction_fid_of_every_held_out_image_once(monkeypatch):
  """rFID against the held-out images' own statistics, each image reconstructed once, in
  calls of one shape (the last batch padded)."""
  net = random_domain_net(batch_size=64)
  monkeypatch.setattr(networks, "load", lambda spec, **kwargs: net)
  held_out = jdata.load_source("digits", split="test", image_size=8, channels=1).images
  calls = []

  def darker(x):
    calls.append(x.shape[0])
    return x * 0.5 - 0.5

  got = evaluate.evaluate_config(_rfid_config("rfid"), None, method=_Reconstructs(),
                                 reconstruct_fn=darker)
  assert set(got) == {"features", "rfid", "rfid_num_images", "psnr"}
  assert got["rfid_num_images"] == len(held_out) and set(calls) == {40}
  assert len(calls) == -(-len(held_out) // 40)
  x = held_out.astype(np.float32) / 127.5 - 1.0
  real = fid.GaussianStats(net.feature_dim).update(net(held_out)["features"])
  fake = fid.GaussianStats(net.feature_dim).update(net(darker(x))["features"])
  assert got["rfid"] == pytest.approx(fid.fid_from_stats(fake, real), rel=1e-5)
  same = evaluate.evaluate_config(_rfid_config("rfid"), None, method=_Reconstructs(),
                                  reconstruct_fn=lambda x: x)
  assert abs(same["rfid"]) < 1e-3 < got["rfid"]  # a perfect reconstruction scores 0


def test_reconstruction_fid_caches_the_held_out_statistics(monkeypatch):
  """The held-out images' statistics are cached (`fid.reference_stats` of the eval split): a
  second evaluation runs the network over the reconstructions only, with the same rFID."""
  net = random_domain_net(batch_size=64)
  seen = []

  def counting(images):
    seen.append(len(images))
    return net(images)

  counting.feature_dim, counting.name = net.feature_dim, net.name
  monkeypatch.setattr(networks, "load", lambda spec, **kwargs: counting)
  n = len(jdata.load_source("digits", split="test", image_size=8, channels=1))
  first = evaluate.evaluate_config(_rfid_config("rfid"), None, method=_Reconstructs(),
                                   reconstruct_fn=lambda x: x * 0.5 - 0.5)
  assert sum(seen) == 2 * n
  seen.clear()
  second = evaluate.evaluate_config(_rfid_config("rfid"), None, method=_Reconstructs(),
                                    reconstruct_fn=lambda x: x * 0.5 - 0.5)
  assert sum(seen) == n and second["rfid_num_images"] == n
  assert second["rfid"] == pytest.approx(first["rfid"], rel=1e-6)


def test_reconstruction_fid_with_given_statistics():
  """`reference_stats` of the same images gives the rFID taken in the pass, without running the
  net over them; statistics of another number of images are refused."""
  images = np.random.default_rng(0).integers(0, 256, (30, 4, 4, 1), dtype=np.uint8)
  darker = lambda x: x * 0.5 - 0.5  # noqa: E731
  inline = evaluate.reconstruction_metrics(darker, [images], net=_Uint8Only(), batch_size=8)
  real = fid.GaussianStats(4).update(_Uint8Only()(images)["features"])
  stats = {"mu": real.mean, "sigma": real.cov, "count": real.count}
  given = evaluate.reconstruction_metrics(darker, [images], net=_Uint8Only(), batch_size=8,
                                          reference_stats=stats)
  assert given["rfid"] == pytest.approx(inline["rfid"], rel=1e-9)
  with pytest.raises(ValueError, match="statistics of exactly these images"):
    evaluate.reconstruction_metrics(darker, [images[:20]], net=_Uint8Only(), batch_size=8,
                                    reference_stats=stats)


class _Uint8Only:
  """A feature net that refuses floats, as the FID Inception does."""

  feature_dim = 4

  def __call__(self, images):
    assert images.dtype == np.uint8, images.dtype
    flat = images.reshape(len(images), -1).astype(np.float64)
    return {"features": flat[:, :4] + flat[:, 4:8] ** 2 / 255.0}


def test_reconstruction_fid_feeds_the_feature_net_uint8():
  """Reconstructions come back as [-1, 1] floats; the Inception takes uint8 only (the CIFAR
  ladder's VQ-GAN rFID failed on that): both sides reach the net quantized."""
  images = np.random.default_rng(0).integers(0, 256, (30, 4, 4, 1), dtype=np.uint8)
  same = evaluate.reconstruction_metrics(lambda x: x, [images], net=_Uint8Only(), batch_size=8)
  assert same["rfid_num_images"] == 30 and abs(same["rfid"]) < 1e-6  # the round trip is exact
  darker = evaluate.reconstruction_metrics(lambda x: x * 0.5 - 0.5, [images], net=_Uint8Only(),
                                           batch_size=8)
  assert darker["rfid"] > 1.0


def test_reconstruction_lpips_in_the_same_pass(monkeypatch):
  """"lpips": the mean of `lpips_distance(net=eval.lpips_net)` over every held-out image and its
  reconstruction (clipped to [-1, 1]), in the rFID pass; alone it loads no feature network."""
  net = random_domain_net(batch_size=64)
  monkeypatch.setattr(networks, "load", lambda spec, **kwargs: net)
  nets = []

  def fake_lpips(*, net):  # a stand-in distance: the mean |x0 - x1| of each image
    nets.append(net)
    return lambda a, b: jnp.mean(jnp.abs(a - b), axis=(1, 2, 3))

  monkeypatch.setattr(evaluate.lpips_lib, "lpips_distance", fake_lpips)
  held_out = jdata.load_source("digits", split="test", image_size=8, channels=1).images
  x = held_out.astype(np.float32) / 127.5 - 1.0
  calls = []

  def brighter(images):
    calls.append(images.shape[0])
    return images * 0.5 + 0.75  # above 1 where images > 0.5: clipped before the distance

  config = _rfid_config("rfid,lpips")
  config.eval.lpips_net = "vgg"
  got = evaluate.evaluate_config(config, None, method=_Reconstructs(), reconstruct_fn=brighter)
  assert set(got) == {"features", "rfid", "rfid_num_images", "lpips", "lpips_num_images",
                      "lpips_net", "psnr"}
  assert nets == ["vgg"] and got["lpips_net"] == "vgg" and set(calls) == {40}
  assert len(calls) == -(-len(held_out) // 40)  # one reconstruction pass for both metrics
  expected = np.mean(np.abs(x - np.clip(x * 0.5 + 0.75, -1, 1)))
  assert got["lpips"] == pytest.approx(expected, rel=1e-5)
  assert got["lpips_num_images"] == len(held_out)
  # PSNR in the same pass: per image 10 log10(1 / MSE) on [0, 1] of the clipped
  # reconstruction, averaged over every held-out image (NumPy, float64).
  err = (np.clip(x * 0.5 + 0.75, -1, 1).astype(np.float64) - x) / 2.0
  per_image = 10.0 * np.log10(1.0 / np.mean(err.reshape(len(x), -1) ** 2, axis=1))
  assert got["psnr"] == pytest.approx(per_image.mean(), rel=1e-5)

  def no_features(*args, **kwargs):
    raise AssertionError("reconstruction LPIPS alone loads no feature network")

  monkeypatch.setattr(networks, "load", no_features)
  alone = evaluate.evaluate_config(_rfid_config("lpips"), None, method=_Reconstructs(),
                                   reconstruct_fn=brighter)
  assert set(alone) == {"lpips", "lpips_num_images", "lpips_net", "psnr"} and nets[-1] == "alex"
  assert alone["lpips"] == pytest.approx(got["lpips"], rel=1e-6)


def test_rfid_of_a_trained_autoencoder(tmp_path, monkeypatch):
  """The AE smoke run through `reconstruct_images`, jitted and bound to the restored state the
  way `jgen.train.inference.evaluate` passes it; its FID is refused."""
  config = load_experiment("autoencoder/ae_digits", "smoke")
  workdir = str(tmp_path / "run")
  jgen.run.main(config, workdir=workdir, mode="train")
  method, _, state = inference.restore_for_inference(config, workdir)
  assert isinstance(method, Reconstructs) and not isinstance(method, Samples)
  monkeypatch.setattr(networks, "load",
                      lambda spec, **kwargs: random_domain_net(batch_size=kwargs["batch_size"]))
  reconstruct = jax.jit(method.reconstruct_images)
  config.eval.metrics = "rfid"
  got = evaluate.evaluate_config(config, None, method=method,
                                 reconstruct_fn=lambda x: reconstruct(state, x))
  assert got["features"] == "domain-digits" and np.isfinite(got["rfid"]) and got["rfid"] > 0
  assert got["rfid_num_images"] == len(inputs.load_data(config, split=config.data.eval_split))
  config.eval.metrics = "fid"
  with pytest.raises(ValueError, match="reconstruction FID"):
    evaluate.evaluate_config(config, None, method=method)


def test_ppl_distance_auto_is_lpips_unless_the_network_is_a_domain_classifier(monkeypatch):
  """eval.ppl_distance: 'auto' keeps the domain classifier's feature distance (digits-sized
  images) and takes LPIPS-VGG for any other network; 'lpips' / 'features' force either; the
  face crop reaches the path lengths."""
  domain_net = random_domain_net(batch_size=16)
  inception_like = random_domain_net(batch_size=16)
  inception_like.name = "inception"
  lpips_nets, crops = [], []

  def fake_lpips(*, net):
    lpips_nets.append(net)
    return lambda a, b: jnp.zeros((a.shape[0],))

  def fake_ppl(generator_fn, distance, rng, *, crop, **kwargs):
    crops.append(crop)
    return {"ppl": 1.0, "ppl_unfiltered": 1.0, "ppl_std": 0.0, "num_samples": 4.0}

  monkeypatch.setattr(evaluate.lpips_lib, "lpips_distance", fake_lpips)
  monkeypatch.setattr(evaluate.ppl, "perceptual_path_length", fake_ppl)
  ev = base_config().eval
  fns = {"generator_fn": lambda z: z, "space": "w"}
  got = [evaluate._path_length(domain_net, fns, ev, batch_size=4)["ppl_distance"]]  # pylint: disable=protected-access
  ev.ppl_crop = True
  got.append(evaluate._path_length(inception_like, fns, ev, batch_size=4)["ppl_distance"])  # pylint: disable=protected-access
  ev.ppl_distance = "features"
  got.append(evaluate._path_length(inception_like, fns, ev, batch_size=4)["ppl_distance"])  # pylint: disable=protected-access
  ev.ppl_distance = "lpips"
  got.append(evaluate._path_length(domain_net, fns, ev, batch_size=4)["ppl_distance"])  # pylint: disable=protected-access
  assert got == ["features:domain-digits", "lpips-vgg", "features:inception", "lpips-vgg"]
  assert lpips_nets == ["vgg", "vgg"] and crops == [False, True, True, True]
  ev.ppl_distance = "inception"
  with pytest.raises(ValueError, match="unknown eval.ppl_distance"):
    evaluate._path_length(domain_net, fns, ev, batch_size=4)  # pylint: disable=protected-access
