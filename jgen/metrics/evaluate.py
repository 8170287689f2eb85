"""Sample metrics of a generative model: FID, KID, IS, precision/recall, density/coverage.

`image_metrics` scores images (an array or an iterable of chunks, streamed through the
feature network) against a reference: Gaussian statistics for FID, real features for KID and
the k-NN metrics. `sample_metrics` does the same for a sampler, ``sample_fn(i, n)`` giving the
i-th chunk of n samples. `reference_features` caches real features of a dataset split next to
`jgen.metrics.fid.reference_stats`' statistics. `evaluate_config` is the boundary with an
experiment config (``config.eval``), used by ``launch.py --mode=eval``::

  --config.eval.metrics=fid,is,pr          # off by default ("")
  --config.eval.features=auto              # domain:digits for 'digits', else inception
  --config.eval.num_samples=10000

Metric names: "fid", "kid", "is", "pr" (precision & recall), "dc" (density & coverage),
"rfid" (reconstruction FID) and "lpips" (the mean LPIPS between every held-out image and its
reconstruction, ``eval.lpips_net``: 'alex', the LPIPS paper's metric, or 'vgg'; both in
`reconstruction_metrics`, which also reports their mean PSNR), and "ppl" (perceptual path
length, `jgen.metrics.ppl`, of a method that gives its latent paths: ``path_length_fns`` of
`jgen.train.method.PathLengths`). PPL's distance (``eval.ppl_distance``) is LPIPS-VGG, the
paper's, or -- the stand-in of digits-sized images, where the feature network is a
``domain:<dataset>`` classifier and 'auto' picks it -- the squared distance of that network's
float features (`jgen.metrics.ppl.feature_distance`, not comparable to published PPL);
``eval.ppl_crop`` takes StyleGAN's face crop.

Methods that do not sample (the AE, DAE, VQ-VAE and first stages: `jgen.train.Reconstructs`,
not `Samples`; ``sample_fn=None``) are refused the sample metrics. Their metrics are "rfid" and
"lpips". rFID: every
image of ``config.data.eval_split`` reconstructed once, against the statistics of those same
held-out images (not the ``reference_split`` statistics of FID), so it measures what
reconstruction loses and not the gap between the train and test splits (the rFID of VQGAN /
latent diffusion papers).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import jax
import numpy as np

from jgen import data as jdata
from jgen.metrics import domain
from jgen.metrics import feature_net as fnet
from jgen.metrics import fid as fid_lib
from jgen.metrics import lpips as lpips_lib
from jgen.metrics import classifier_score as is_lib
from jgen.metrics import mmd as kid_lib
from jgen.metrics import networks
from jgen.metrics import ppl
from jgen.metrics import precision_recall as pr_lib
from jgen.metrics import weights
from jgen.ops import image as image_ops

__all__ = ["METRICS", "RECONSTRUCTION_METRICS", "SAMPLE_METRICS", "auto_features",
           "evaluate_config", "image_metrics", "parse_metrics", "reconstruction_metrics",
           "reference_features", "sample_metrics"]

log = logging.getLogger("jgen")

SAMPLE_METRICS = ("fid", "kid", "is", "pr", "dc")
RECONSTRUCTION_METRICS = ("rfid", "lpips")
METRICS = (*SAMPLE_METRICS, *RECONSTRUCTION_METRICS, "ppl")


def parse_metrics(spec: str | Sequence[str] | None) -> tuple[str, ...]:
  """``"fid,is,pr"`` (or a sequence of names) -> ("fid", "is", "pr"); "" or None -> ().

  Raises:
    ValueError: for an unknown name.
  """
  if not spec:
    return ()
  names = spec.split(",") if isinstance(spec, str) else list(spec)
  names = tuple(dict.fromkeys(n.strip().lower() for n in names if n.strip()))
  unknown = [n for n in names if n not in METRICS]
  if unknown:
    raise ValueError(f"unknown sample metric(s) {unknown}; choose from {', '.join(METRICS)}")
  return names


def auto_features(source: str) -> str:
  """The feature network 'auto' picks for a data source: the domain classifier of that
  dataset where jgen has one (``digits`` -> ``domain:digits``, Debian's Fashion-MNIST ->
  ``domain:fashion_mnist``), else ``inception``."""
  for name, spec in domain.DATASETS.items():
    if spec.source is not None and spec.source == source:
      return f"domain:{name}"
  return "inception"


def reference_features(net: fnet.FeatureNet, source: str, *, num: int, split: str = "train",
                       seed: int = 0, data_dir: str | None = None,
                       image_size: int | None = None, channels: int | None = None,
                       resize: bool = False, batch_size: int = 200, cache: bool = True
                       ) -> np.ndarray:
  """Features [min(num, N), D] of a seeded random subset of a dataset split, cached as .npz.

  A random subset (not the first images) because folder sources are sorted by class. The cache
  sits beside `jgen.metrics.fid.reference_stats`' files
  (``$JGEN_CACHE/fid_stats/<net.name>/...-features.npz``).
  """
  key = f"{source}|{split}|{image_size}|{channels}|{resize}|{num}|{seed}"
  name = fid_lib._slug(  # pylint: disable=protected-access
      f"{source}-{split}-{image_size}x{channels}{'r' if resize else ''}-n{num}-s{seed}")
  path = (os.path.join(fnet.cache_dir("fid_stats", net.name), f"{name}-features.npz")
          if cache else None)
  if path and os.path.exists(path):
    with np.load(path) as f:
      if str(f["key"]) == key:
        return f["features"]
  src = jdata.load_source(source, split=split, data_dir=data_dir, image_size=image_size,
                          channels=channels, resize=resize)
  index = fid_lib.subset_index(len(src), num, seed)
  _, kept = fid_lib.accumulate(net, fid_lib.source_chunks(src, index, batch_size),
                               batch_size=batch_size, keep=("features",))
  features = kept["features"]
  if path:
    tmp = path + ".tmp.npz"
    np.savez(tmp, features=features, key=np.array(key))
    os.replace(tmp, path)
  return features


def reconstruction_metrics(reconstruct_fn: Callable[[np.ndarray], Any],
                           images: Iterable[np.ndarray], *, net: fnet.FeatureNet | None = None,
                           lpips_fn: Callable[[Any, Any], Any] | None = None,
                           batch_size: int = 100,
                           reference_stats: dict[str, Any] | None = None) -> dict[str, float]:
  """rFID, reconstruction LPIPS and PSNR of `images`, each image reconstructed once.

  rFID (with `net`): FID of the reconstructions against the statistics of `images`
  themselves. LPIPS (with `lpips_fn`): the mean over images of ``lpips_fn(x, clip(x_hat, -1,
  1))`` on [-1, 1] images (the reconstruction clipped to the image range, as it is shown).
  PSNR (always): the mean over images of `jgen.ops.image.psnr`, 10 log10(1 / MSE) on [0, 1]
  of the clipped reconstruction (the first stages' held-out ``psnr``, over every image).

  Args:
    reconstruct_fn: images `[batch_size, H, W, C]` in [-1, 1] -> their reconstructions in
      [-1, 1] (or uint8); always called with `batch_size` images (the last batch is padded by
      repeating its last image, the padding dropped), so it compiles once.
    images: uint8 images (or [-1, 1] floats), an iterable of chunks.
    net: the feature network of rFID (None: no rFID).
    lpips_fn: ``(x0, x1) -> [N]`` LPIPS distances (`jgen.metrics.lpips.lpips_distance`, jitted;
      None: no LPIPS).
    batch_size: images per `reconstruct_fn` call.
    reference_stats: `net`'s statistics of exactly `images` ({"mu", "sigma", "count"}, as
      `jgen.metrics.fid.reference_stats` of their split caches them); None: taken here, which
      runs the network over the real images as well as the reconstructions.

  Returns:
    {"psnr"}, {"rfid", "rfid_num_images"} with `net`, {"lpips", "lpips_num_images"} with
    `lpips_fn`.

  Raises:
    ValueError: `reference_stats` of a different number of images.
  """
  cached = reference_stats is not None
  real = (None if net is None or cached else fid_lib.GaussianStats(net.feature_dim))
  fake = fid_lib.GaussianStats(net.feature_dim) if net is not None else None
  lpips_sum, psnr_sum, count = 0.0, 0.0, 0
  for batch in fnet.iterate_batches(images, batch_size):
    n = len(batch)
    padded = np.concatenate([batch, np.repeat(batch[-1:], batch_size - n, axis=0)])
    x = (padded.astype(np.float32) / 127.5 - 1.0 if padded.dtype == np.uint8
         else padded.astype(np.float32))
    x_hat = np.asarray(reconstruct_fn(x))
    if net is not None:  # feature nets take uint8 (the Inception refuses floats)
      if not cached:
        real.update(net(fnet.as_uint8(batch))["features"])
      fake.update(net(fnet.as_uint8(x_hat[:n]))["features"])
    xh = (x_hat.astype(np.float32) / 127.5 - 1.0 if x_hat.dtype == np.uint8
          else np.clip(x_hat.astype(np.float32), -1.0, 1.0))
    psnr_sum += float(np.sum(np.asarray(image_ops.psnr(xh[:n], x[:n]), np.float64)))
    if lpips_fn is not None:
      lpips_sum += float(np.sum(np.asarray(lpips_fn(x, xh), np.float64)[:n]))
    count += n
  out: dict[str, float] = {"psnr": psnr_sum / max(count, 1)}
  if net is not None:
    if cached and int(reference_stats["count"]) != count:
      raise ValueError(f"reference_stats are of {int(reference_stats['count'])} images, the "
                       f"reconstructions of {count}: pass the statistics of exactly these images")
    ref = reference_stats if cached else real
    out.update(rfid=fid_lib.fid_from_stats(fake, ref), rfid_num_images=float(count))
  if lpips_fn is not None:
    out.update(lpips=lpips_sum / max(count, 1), lpips_num_images=float(count))
  return out


def image_metrics(images: np.ndarray | Iterable[np.ndarray], net: fnet.FeatureNet, *,
                  metrics: Sequence[str] = ("fid", "is", "pr"),
                  reference_stats: fid_lib.GaussianStats | dict[str, Any] | None = None,
                  reference_features: np.ndarray | None = None, batch_size: int = 200,
                  is_splits: int = 10, k: int = 3, kid_subsets: int = 100,
                  kid_subset_size: int = 1000, seed: int = 0) -> dict[str, float]:
  """Sample metrics of `images` (uint8 or [-1, 1] floats, an array or chunks) under `net`.

  Args:
    images: the generated images.
    net: the feature network (`jgen.metrics.networks.load`).
    metrics: names from `METRICS`.
    reference_stats: real statistics ({'mu', 'sigma'} or a GaussianStats), for "fid".
    reference_features: real features [N, D], for "kid", "pr", "dc".
    batch_size: images per network call.
    is_splits: IS splits.
    k: the nearest neighbour of precision/recall and density/coverage.
    kid_subsets, kid_subset_size: KID subsets.
    seed: KID subset seed.

  Returns:
    {"fid", "kid", "kid_std", "is", "is_std", "precision", "recall", "density", "coverage",
    "num_samples"}, the keys of the metrics asked for.

  Raises:
    ValueError: an unknown metric, or a reference a metric needs is missing.
  """
  metrics = parse_metrics(metrics)
  if "fid" in metrics and reference_stats is None:
    raise ValueError("FID needs reference_stats")
  if {"kid", "pr", "dc"} & set(metrics) and reference_features is None:
    raise ValueError("KID, precision/recall and density/coverage need reference_features")
  keep = ((("features",) if {"kid", "pr", "dc"} & set(metrics) else ())
          + (("logits",) if "is" in metrics else ()))
  logits: list[np.ndarray] = []
  chunks = fnet.iterate_batches(images, batch_size)
  stats = fid_lib.GaussianStats(net.feature_dim)
  feats: list[np.ndarray] = []
  for batch in chunks:
    out = net(batch)
    stats.update(out["features"])
    if "features" in keep:
      feats.append(np.asarray(out["features"], np.float32))
    if "logits" in keep:
      logits.append(np.asarray(is_lib.logits_for_is(out), np.float32))
  result: dict[str, float] = {"num_samples": float(stats.count)}
  if "fid" in metrics:
    result["fid"] = fid_lib.fid_from_stats(stats, reference_stats)
  if "is" in metrics:
    result["is"], result["is_std"] = is_lib.inception_score(np.concatenate(logits),
                                                            splits=is_splits)
  fake = np.concatenate(feats) if feats else None
  if "kid" in metrics:
    result["kid"], result["kid_std"] = kid_lib.kid(
        reference_features, fake, num_subsets=kid_subsets, subset_size=kid_subset_size,
        seed=seed)
  if {"pr", "dc"} & set(metrics):
    scores = pr_lib.prdc(reference_features, fake, k=k)
    if "pr" in metrics:
      result.update(precision=scores["precision"], recall=scores["recall"])
    if "dc" in metrics:
      result.update(density=scores["density"], coverage=scores["coverage"])
  return result


def sample_metrics(sample_fn: Callable[[int, int], Any], num_samples: int,
                   net: fnet.FeatureNet, *, sample_batch_size: int = 100,
                   **kwargs: Any) -> dict[str, float]:
  """`image_metrics` of `num_samples` samples drawn chunk by chunk, never all in memory.

  Args:
    sample_fn: (chunk index i, n) -> n images [n, H, W, C], float (clipped to [-1, 1] and
      quantized as the sample grids are) or uint8; chunk i must use its own randomness (e.g.
      ``fold_in(key, i)``).
    num_samples: total samples (the last chunk is trimmed).
    net: the feature network.
    sample_batch_size: n of every `sample_fn` call (one compiled sampler shape).
    **kwargs: `image_metrics` arguments (metrics, reference_stats, reference_features, ...).
  """
  size = min(sample_batch_size, num_samples)

  def chunks() -> Iterator[np.ndarray]:
    for i in range(math.ceil(num_samples / size)):
      images = np.asarray(sample_fn(i, size))[:num_samples - i * size]
      # A sample is scored as the image it is once saved: clipped to [-1, 1] and quantized (as
      # the grids' writer, EDM's and torchcfm's FID scripts do). An unclipped ODE sampler
      # (flow matching, EDM) overshoots that range (to [-3.91, 4.19] at the CIFAR-10 ladder's
      # flow-matching step 250), which `as_uint8`'s check of data ranges would refuse.
      yield images if images.dtype == np.uint8 else fnet.to_uint8(images)

  return image_metrics(chunks(), net, **kwargs)


def _check_method(config: Any, metrics: Sequence[str], method: Any, sample_fn: Callable | None,
                  reconstruct_fn: Callable | None, path_length_fns: dict | None) -> None:
  """Raises ValueError for metrics the method cannot be scored on (before any features)."""
  sampled = [m for m in metrics if m in SAMPLE_METRICS]
  if sampled and sample_fn is None:
    raise ValueError(
        f"method {config.get('method')} ({type(method).__name__}) has no generative sampler "
        f"(an autoencoder shows held-out reconstructions, not samples), so there are no "
        f"samples for the sample metrics {','.join(sampled)}. Use reconstruction FID "
        f"instead: --config.eval.metrics=rfid (every image of data.eval_split reconstructed "
        f"once, against those images' statistics)")
  if "ppl" in metrics and path_length_fns is None:
    raise ValueError(
        f"ppl (perceptual path length) needs a method with latent paths (path_length_fns, "
        f"jgen.train.method.PathLengths: the GANs); method {config.get('method')} has none")
  reconstructed = [m for m in metrics if m in RECONSTRUCTION_METRICS]
  if reconstructed and reconstruct_fn is None:
    raise ValueError(
        f"{','.join(reconstructed)} (reconstruction metrics) need a method that reconstructs "
        f"images (reconstruct_images(state, images), e.g. the AE or VQ-VAE); method "
        f"{config.get('method')} gave no reconstruct_fn")


def evaluate_config(config: Any, sample_fn: Callable[[int, int], Any] | None, *,
                    method: Any = None,
                    reconstruct_fn: Callable[[np.ndarray], Any] | None = None,
                    path_length_fns: dict[str, Any] | None = None
                    ) -> dict[str, Any] | None:
  """The sample metrics ``config.eval`` asks for, of `sample_fn` against ``config.data``.

  Args:
    config: the experiment config.
    sample_fn: (chunk index i, n) -> n samples in [-1, 1]; None for a method that does not
      sample (an autoencoder), which is refused the sample metrics (ValueError).
    method: the method object (named in errors).
    reconstruct_fn: images [n, H, W, C] in [-1, 1] -> reconstructions (the method's
      ``reconstruct_images`` with the state bound), for "rfid".
    path_length_fns: `jgen.metrics.ppl.path_length_distances` keyword arguments of the
      method's latent paths (generator_fn, space, latent_shape, mapping_fn, z_radius), for
      "ppl".

  Reads ``config.eval``: metrics ("fid,is,pr"; "" = off), features ("auto", "inception",
  "domain:<dataset>"), num_samples, batch_size, dtype, reference_split ("" = data.split),
  reference_max_images (a random subset of the split for the FID statistics, seeded by
  eval.seed; None = the whole split),
  num_reference_features (real images of KID/P&R/D&C; None = num_samples), inception_weights,
  domain_source, is_splits, pr_k, kid_subsets, kid_subset_size, ppl_samples, ppl_epsilon,
  ppl_sampling, ppl_distance, ppl_crop, lpips_net.

  Returns:
    {"features": net name, metric: value, ...}, or None when no metrics are asked for, or
    when ``features="auto"`` resolves to a network that is unavailable here (Inception
    weights or the domain data absent; logged). "rfid" adds {"rfid", "rfid_num_images"},
    "lpips" {"lpips", "lpips_num_images", "lpips_net"}, "ppl" {"ppl", "ppl_unfiltered",
    "ppl_std", "ppl_num_samples", "ppl_distance"}.

  Raises:
    ValueError: sample metrics without a `sample_fn`, or "rfid" / "lpips"
      without a `reconstruct_fn`; raised before any feature extraction.
    jgen.metrics.weights.LPIPSWeightsNotFoundError: "lpips", or "ppl" with LPIPS, without
      the LPIPS weights (the message names the install command).
  """
  ev = config.get("eval")
  metrics = parse_metrics(ev.get("metrics") if ev is not None else None)
  if not metrics:
    return None
  _check_method(config, metrics, method, sample_fn, reconstruct_fn, path_length_fns)
  d = config.data
  net = None
  if set(metrics) != {"lpips"}:  # reconstruction LPIPS alone needs no feature network
    net = _feature_net(ev, d.source)
    if net is None:
      return None
  result: dict[str, Any] = {"features": net.name} if net is not None else {}
  reconstructed = [m for m in metrics if m in RECONSTRUCTION_METRICS]
  if reconstructed:
    src = jdata.load_source(d.source, split=d.eval_split, data_dir=d.data_dir,
                            image_size=d.image_size, channels=d.channels, resize=d.resize)
    lpips_fn = None
    if "lpips" in metrics:
      lpips_fn = jax.jit(lpips_lib.lpips_distance(net=ev.lpips_net))
      result["lpips_net"] = ev.lpips_net
    log.info("%s of all %d images of %s/%s (rFID with %s features, LPIPS-%s)",
             ",".join(reconstructed), len(src), d.source, d.eval_split,
             net.name if net is not None else "no", ev.lpips_net)
    size = config.sample.batch_size
    real_stats = None
    if "rfid" in metrics:
      # The split's statistics, cached: a later evaluation runs the network over the
      # reconstructions only (half the feature passes).
      real_stats = fid_lib.reference_stats(
          net, d.source, split=d.eval_split, data_dir=d.data_dir, image_size=d.image_size,
          channels=d.channels, resize=d.resize, batch_size=ev.batch_size)
    result.update(reconstruction_metrics(
        reconstruct_fn, fid_lib.source_chunks(src, np.arange(len(src)), size),
        net=net if "rfid" in metrics else None, lpips_fn=lpips_fn, batch_size=size,
        reference_stats=real_stats))
  if "ppl" in metrics:
    result.update(_path_length(net, path_length_fns, ev, batch_size=config.sample.batch_size))
  sampled = [m for m in metrics if m in SAMPLE_METRICS]
  if not sampled:
    return result
  split = ev.reference_split or d.split
  data_kw = dict(split=split, data_dir=d.data_dir, image_size=d.image_size,
                 channels=d.channels, resize=d.resize, batch_size=ev.batch_size)
  ref_feats = None
  if {"kid", "pr", "dc"} & set(sampled):
    ref_feats = reference_features(net, d.source, num=ev.num_reference_features
                                   or ev.num_samples, seed=ev.seed, **data_kw)
  ref_stats = None
  if "fid" in sampled:
    # The same seeded subset as the P&R features: its statistics come from those features
    # (one pass of the network over the real images instead of two).
    shared = (ref_feats if ref_feats is not None
              and ev.reference_max_images == (ev.num_reference_features or ev.num_samples)
              else None)
    ref_stats = fid_lib.reference_stats(net, d.source, max_images=ev.reference_max_images,
                                        seed=ev.seed, features=shared, **data_kw)
  log.info("sample metrics %s of %d samples with %s features against %s/%s",
           ",".join(sampled), ev.num_samples, net.name, d.source, split)
  result.update(sample_metrics(
      sample_fn, ev.num_samples, net, sample_batch_size=config.sample.batch_size,
      metrics=sampled, reference_stats=ref_stats, reference_features=ref_feats,
      batch_size=ev.batch_size, is_splits=ev.is_splits, k=ev.pr_k, kid_subsets=ev.kid_subsets,
      kid_subset_size=ev.kid_subset_size, seed=ev.seed))
  return result


def _feature_net(ev: Any, source: str) -> fnet.FeatureNet | None:
  """``eval.features``' network; None (logged) when 'auto' chose one unavailable here."""
  spec = auto_features(source) if ev.features == "auto" else ev.features
  kwargs: dict[str, Any] = {"batch_size": ev.batch_size}
  if spec == "inception":
    kwargs.update(weights=ev.inception_weights, dtype=ev.dtype)
  else:
    kwargs.update(source=ev.domain_source)
  try:
    return networks.load(spec, **kwargs)
  except (weights.InceptionWeightsNotFoundError, jdata.DatasetUnavailableError) as e:
    if ev.features != "auto":
      raise
    log.warning("sample metrics skipped: eval.features='auto' chose %s, which is unavailable "
                "here: %s", spec, e)
    return None


PPL_DISTANCES = ("auto", "lpips", "features")


def _path_length(net: fnet.FeatureNet, fns: dict[str, Any], ev: Any, *, batch_size: int
                 ) -> dict[str, Any]:
  """PPL of the method's latent paths: LPIPS-VGG, or `net`'s float features (``ppl_distance``;
  'auto': the features of a domain classifier, LPIPS otherwise)."""
  kind = ev.ppl_distance
  if kind not in PPL_DISTANCES:
    raise ValueError(f"unknown eval.ppl_distance={kind!r}; choose one of {PPL_DISTANCES}")
  if kind == "auto":
    kind = "features" if net.name.startswith("domain") else "lpips"
  if kind == "lpips":
    distance = lpips_lib.lpips_distance(net="vgg")
    what = "LPIPS-VGG"
  else:
    distance = ppl.feature_distance(ppl.float_features_fn(net))
    what = f"{net.name} feature (not LPIPS)"
  log.info("PPL (%s space, %s sampling%s) of %d pairs with %s distances",
           fns.get("space", "z"), ev.ppl_sampling, ", face crop" if ev.ppl_crop else "",
           ev.ppl_samples, what)
  out = ppl.perceptual_path_length(
      fns["generator_fn"], distance, jax.random.key(ev.seed), num_samples=ev.ppl_samples,
      epsilon=ev.ppl_epsilon, sampling=ev.ppl_sampling, batch_size=batch_size,
      crop=bool(ev.ppl_crop), **{k: v for k, v in fns.items() if k != "generator_fn"})
  return {"ppl": out["ppl"], "ppl_unfiltered": out["ppl_unfiltered"],
          "ppl_std": out["ppl_std"], "ppl_num_samples": out["num_samples"],
          "ppl_distance": "lpips-vgg" if kind == "lpips" else f"features:{net.name}"}
