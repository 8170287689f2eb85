"""Frechet Inception Distance: streaming feature statistics, the distance, cached references.

FID (Heusel et al. 2017) is the Frechet distance between two Gaussians fitted to network
features of real and generated images::

  FID = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)).

Statistics are accumulated in float64, batch by batch (`GaussianStats`, Chan et al.'s pairwise
merge of means and centered scatter matrices), so 50,000 images are never held at once; the
covariance is the unbiased one (``np.cov``), as in the TF and pytorch-fid references.

The trace term. pytorch-fid takes ``scipy.linalg.sqrtm(S1 @ S2)`` of the non-symmetric product,
which for near-singular covariances (fewer images than feature dimensions) can come back
complex or inaccurate, hence its retry with ``eps * I`` added. We use instead

  tr((S1 S2)^(1/2)) = sum of singular values of S1^(1/2) S2^(1/2)

(the eigenvalues of S1 S2 equal those of the symmetric PSD matrix S1^(1/2) S2 S1^(1/2) =
A A^T with A = S1^(1/2) S2^(1/2), i.e. the squared singular values of A). Both square roots come
from symmetric eigendecompositions (eigenvalues clipped at 0) and the last step is an SVD: all
three are backward stable, nothing is complex, no offset is needed, and the condition number
is not squared as it would be by forming A A^T. The test suite checks it against a
``scipy.linalg.sqrtm`` reference to 1e-6 on random and rank-deficient covariances.

Command line (like pytorch-fid)::

  python -m jgen.metrics.fid PATH1 PATH2 [--features inception|domain:digits] [--kid]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from jgen import errors
from jgen import data as jdata
from jgen.metrics import feature_net as fnet
from jgen.metrics import mmd as kid_lib
from jgen.metrics import networks

__all__ = [
    "GaussianStats",
    "accumulate",
    "fid_from_stats",
    "frechet_distance",
    "load_images",
    "load_stats",
    "main",
    "reference_stats",
    "save_stats",
    "trace_sqrt_product",
]

log = logging.getLogger("jgen")


class GaussianStats:
  """Streaming mean and covariance of feature vectors, in float64.

  ``update`` folds in a batch; ``merge`` combines two accumulators (e.g. from two hosts) with
  the pairwise formulas of Chan, Golub & LeVeque (1979): with delta = mean_b - mean_a,
  mean = mean_a + delta n_b / n and M2 = M2_a + M2_b + delta delta^T n_a n_b / n, where M2 is
  the centered scatter matrix sum (x - mean)(x - mean)^T.
  """

  def __init__(self, dim: int):
    self.dim = int(dim)
    self.count = 0
    self._mean = np.zeros(self.dim, np.float64)
    self._m2 = np.zeros((self.dim, self.dim), np.float64)

  def update(self, features: np.ndarray) -> "GaussianStats":
    """Adds a batch of features [N, D]; returns self."""
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or x.shape[1] != self.dim:
      raise ValueError(f"expected features [N, {self.dim}], got shape {x.shape}")
    if not len(x):
      return self
    batch = GaussianStats(self.dim)
    batch.count = len(x)
    batch._mean = x.mean(axis=0)
    centered = x - batch._mean
    batch._m2 = centered.T @ centered
    return self.merge(batch)

  def merge(self, other: "GaussianStats") -> "GaussianStats":
    """Folds another accumulator into this one; returns self."""
    if other.dim != self.dim:
      raise ValueError(f"cannot merge statistics of dimension {other.dim} into {self.dim}")
    if other.count == 0:
      return self
    n = self.count + other.count
    delta = other._mean - self._mean
    self._m2 = self._m2 + other._m2 + np.outer(delta, delta) * (self.count * other.count / n)
    self._mean = self._mean + delta * (other.count / n)
    self.count = n
    return self

  @property
  def mean(self) -> np.ndarray:
    return self._mean.copy()

  @property
  def cov(self) -> np.ndarray:
    """Unbiased covariance (divides by N - 1, as ``np.cov``)."""
    if self.count < 2:
      raise ValueError(f"a covariance needs at least 2 feature vectors, got {self.count}")
    return self._m2 / (self.count - 1)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
  """Symmetric square root of a symmetric PSD matrix (negative round-off eigenvalues -> 0)."""
  w, v = np.linalg.eigh((matrix + matrix.T) / 2)
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
  """tr((sigma1 sigma2)^(1/2)) for covariance matrices, as the nuclear norm of S1^½ S2^½."""
  a = _psd_sqrt(np.asarray(sigma1, np.float64)) @ _psd_sqrt(np.asarray(sigma2, np.float64))
  return float(np.linalg.svd(a, compute_uv=False).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
  """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

  Raises:
    ValueError: when the shapes disagree.
  """
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
    raise ValueError(f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, "
                     f"sigma {sigma1.shape} vs {sigma2.shape}")
  diff = mu1 - mu2
  value = (diff @ diff + np.trace(sigma1) + np.trace(sigma2)
           - 2.0 * trace_sqrt_product(sigma1, sigma2))
  return float(value)


def fid_from_stats(a: GaussianStats | dict[str, np.ndarray],
                   b: GaussianStats | dict[str, np.ndarray]) -> float:
  """FID between two statistics (accumulators or dicts with 'mu' and 'sigma')."""

  def unpack(s):
    return (s.mean, s.cov) if isinstance(s, GaussianStats) else (s["mu"], s["sigma"])

  return frechet_distance(*unpack(a), *unpack(b))


def accumulate(net: fnet.FeatureNet, images: np.ndarray | Iterable[np.ndarray], *,
               batch_size: int = 200, keep: Sequence[str] = ()
               ) -> tuple[GaussianStats, dict[str, np.ndarray]]:
  """Runs `net` over `images` batch by batch, accumulating feature statistics.

  Args:
    net: the feature network.
    images: uint8 (or [-1, 1] float) images [N, H, W, C], or an iterable of such chunks (e.g.
      a generator of model samples), so that the images need not be in memory at once.
    batch_size: images per network call.
    keep: outputs to keep in full and return ("features" for KID/P&R, "logits" for IS).

  Returns:
    (feature statistics, {name: concatenated array} for the names in `keep`).
  """
  stats = GaussianStats(net.feature_dim)
  kept: dict[str, list[np.ndarray]] = {k: [] for k in keep}
  for batch in fnet.iterate_batches(images, batch_size):
    out = net(batch)
    stats.update(out["features"])
    for k in keep:
      if k not in out:
        raise ValueError(f"feature network {net.name} gives no {k!r} (it gives {sorted(out)})")
      kept[k].append(np.asarray(out[k], np.float32))
  joined = {k: (np.concatenate(v) if v else np.zeros((0, 0), np.float32))
            for k, v in kept.items()}
  return stats, joined


def save_stats(path: str, stats: GaussianStats, **meta: Any) -> str:
  """Writes mu, sigma (and count, meta as JSON) to an .npz; returns path."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp.npz"
  np.savez(tmp, mu=stats.mean, sigma=stats.cov, count=np.int64(stats.count),
           meta=np.array(json.dumps(meta, sort_keys=True)))
  os.replace(tmp, path)
  return path


def load_stats(path: str) -> dict[str, Any]:
  """Reads an .npz of statistics: {'mu', 'sigma'} (+ 'count', 'meta' when jgen wrote it)."""
  with np.load(path) as f:
    if "mu" not in f.files or "sigma" not in f.files:
      raise ValueError(f"{path} holds no statistics (arrays 'mu' and 'sigma'); it has {f.files}")
    out: dict[str, Any] = {"mu": f["mu"].astype(np.float64),
                           "sigma": f["sigma"].astype(np.float64)}
    if "count" in f.files:
      out["count"] = int(f["count"])
    if "meta" in f.files:
      out["meta"] = json.loads(str(f["meta"]))
  return out


def _slug(text: str) -> str:
  slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:60]
  return f"{slug}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def subset_index(size: int, num: int | None, seed: int) -> np.ndarray:
  """Sorted indices of a seeded random `num`-subset of `size` items (all of them for None or
  num >= size): a random subset, not the first images, because folder and zip sources are
  sorted by class (the first 10,000 CIFAR-10 training images are two classes)."""
  if num is None or num >= size:
    return np.arange(size)
  return np.sort(np.random.default_rng(seed).permutation(size)[:num])


def source_chunks(src: Any, index: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
  """uint8 images `src[index]` of a `jgen.data` source, `batch_size` at a time."""
  for start in range(0, len(index), batch_size):
    part = index[start:start + batch_size]
    if hasattr(src, "images"):
      yield src.images[part]
    else:
      yield np.stack([src[int(i)]["image"] for i in part])


def reference_stats(net: fnet.FeatureNet, source: str, *, split: str = "train",
                    data_dir: str | None = None, image_size: int | None = None,
                    channels: int | None = None, resize: bool = False,
                    max_images: int | None = None, seed: int = 0, batch_size: int = 200,
                    cache: bool = True, features: np.ndarray | None = None) -> dict[str, Any]:
  """Feature statistics of a dataset split, computed once and cached as .npz.

  The cache file is ``<cache>/fid_stats/<net.name>/<source>-<split>-<shape>-<n>.npz`` under
  ``$JGEN_CACHE`` (default ``~/.cache/jgen``), one per feature network + dataset + split (+ the
  image size/channels the data were adapted to, and the subset used).

  Args:
    net: the feature network.
    source: a `jgen.data.load_source` spec ('digits', 'tfds:cifar10', 'folder:PATH', ...).
    split: the split.
    data_dir: tfds data_dir.
    image_size, channels, resize: as in `jgen.data.load_source` (use the model's data config,
      so that the reference images look like the model's training images).
    max_images: use a random subset of `max_images` images (`subset_index` with `seed`; all
      by default, or when the split has no more).
    seed: the subset's seed.
    batch_size: images per network call.
    cache: read/write the cache file.
    features: the network's features [n, D] of exactly this subset, already computed, as
      `jgen.metrics.evaluate.reference_features` of the same split, size and seed gives them
      for P&R; the statistics are then taken from them, and the network is not run again.

  Returns:
    {'mu', 'sigma', 'count', 'path' (the cache file or None)}.
  """
  subset = "all" if max_images is None else f"{max_images}s{seed}"
  key = f"{source}|{split}|{image_size}|{channels}|{resize}|{subset}"
  name = _slug(f"{source}-{split}-{image_size}x{channels}{'r' if resize else ''}-{subset}")
  path = os.path.join(fnet.cache_dir("fid_stats", net.name), f"{name}.npz") if cache else None
  if path and os.path.exists(path):
    stats = load_stats(path)
    if stats.get("meta", {}).get("key") == key:
      return {**stats, "path": path}
  src = jdata.load_source(source, split=split, data_dir=data_dir, image_size=image_size,
                          channels=channels, resize=resize)
  index = subset_index(len(src), max_images, seed)
  if features is None:
    acc, _ = accumulate(net, source_chunks(src, index, batch_size), batch_size=batch_size)
  elif len(features) != len(index):
    raise ValueError(f"reference_stats got features of {len(features)} images for a subset of "
                     f"{len(index)}: pass the features of exactly that subset (or none)")
  else:
    acc = GaussianStats(net.feature_dim).update(features)
  if path:
    save_stats(path, acc, key=key, net=net.name, source=source, split=split)
    log.info("reference statistics of %s/%s (%d images) cached in %s", source, split,
             len(index), path)
  return {"mu": acc.mean, "sigma": acc.cov, "count": acc.count, "path": path}


# ----------------------------------------------------------------------------- command line


def _images_from_npz(path: str) -> np.ndarray:
  with np.load(path) as f:
    for key in ("images", "arr_0", "x"):
      if key in f.files:
        return fnet.as_uint8(f[key])
    raise ValueError(f"{path} holds neither images ('images', 'arr_0') nor statistics "
                     f"('mu', 'sigma'); it has {f.files}")


def load_images(path: str, *, split: str = "train") -> np.ndarray:
  """uint8 images [N, H, W, C] from a folder, a .zip of images, or an .npz of images.

  An .npz holds 'images' (or 'arr_0'), uint8 or float in [-1, 1] (what ``launch.py
  --mode=sample`` writes). Folders/zips are read with ``jgen.data.load_source('folder:...')``
  (images of one size; with top-level ``train/``/``test/`` folders, `split` picks one).
  """
  if path.endswith(".npz") and os.path.isfile(path):
    return _images_from_npz(path)
  return jdata.load_source(f"folder:{path}", split=split, cache=True).images


def _is_stats_file(path: str) -> bool:
  if not (path.endswith(".npz") and os.path.isfile(path)):
    return False
  with np.load(path) as f:
    return "mu" in f.files and "sigma" in f.files


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(
      prog="python -m jgen.metrics.fid",
      description="FID between two image sets (folders, .zip or .npz of images, or .npz "
                  "statistics with 'mu' and 'sigma'). Inception FID needs the FID Inception "
                  "weights; 'domain:<dataset>' features give a *domain FID*, comparable only to "
                  "other domain FIDs.")
  p.add_argument("paths", nargs=2, metavar="PATH")
  p.add_argument("--features", default="inception",
                 help="inception | domain:digits | domain:mnist | domain:fashion_mnist")
  p.add_argument("--batch_size", type=int, default=200)
  p.add_argument("--weights", default=None,
                 help="Inception weights file (see jgen.metrics.inception)")
  p.add_argument("--dtype", default="float32", help="Inception compute dtype: float32|bfloat16")
  p.add_argument("--domain_source", default=None,
                 help="data of a domain classifier trained on first use (domain:mnist: idx:DIR)")
  p.add_argument("--kid", action="store_true", help="also print KID (needs images, not stats)")
  p.add_argument("--split", default="train",
                 help="split folder for folders/zips with train/ test/")
  p.add_argument("--save_stats", default=None, metavar="OUT.npz",
                 help="write the statistics of PATH1 to this .npz")
  p.add_argument("--verbose", action="store_true", help=errors.VERBOSE_HELP)
  return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
  """The command line; prints ``FID: <value>`` (and ``KID: <mean> +- <std>``)."""
  args = _parse_args(argv)
  kw: dict[str, Any] = {"batch_size": args.batch_size}
  if args.features == "inception":
    kw.update(weights=args.weights, dtype=args.dtype)
  elif args.domain_source:
    kw["source"] = args.domain_source
  net = networks.load(args.features, **kw)
  label = "FID" if args.features == "inception" else f"domain FID ({net.name})"
  stats, feats = [], []
  for path in args.paths:
    if not os.path.exists(path):
      raise errors.DataError(f"{path} does not exist: pass a folder, .zip or .npz of images, "
                             "or an .npz of statistics")
    if _is_stats_file(path):
      if args.kid:
        raise errors.ConfigError(f"--kid needs images, but {path} holds only statistics")
      stats.append(load_stats(path))
      feats.append(None)
      continue
    acc, kept = accumulate(net, load_images(path, split=args.split), batch_size=args.batch_size,
                           keep=("features",) if args.kid else ())
    stats.append(acc)
    feats.append(kept.get("features"))
  if args.save_stats:
    if not isinstance(stats[0], GaussianStats):
      raise errors.ConfigError("--save_stats needs images as PATH1")
    save_stats(args.save_stats, stats[0], net=net.name, source=os.path.abspath(args.paths[0]))
  result = {"fid": fid_from_stats(stats[0], stats[1])}
  note = "" if args.features == "inception" else f"  [{label}: not comparable to Inception FID]"
  print(f"FID: {result['fid']:.6f}{note}")
  if args.kid:
    n = min(len(feats[0]), len(feats[1]))
    mean, std = kid_lib.kid(feats[0], feats[1], subset_size=min(1000, n))
    result.update(kid=mean, kid_std=std)
    print(f"KID: {mean:.6f} +- {std:.6f}")
  return result


if __name__ == "__main__":
  from jgen.xla import set_cpu_xla_flags  # pylint: disable=import-outside-toplevel
  set_cpu_xla_flags()  # before anything starts JAX's backends
  logging.basicConfig(level=logging.INFO, stream=sys.stderr)
  with errors.reported("python -m jgen.metrics.fid"):
    main()
