"""A small classifier as the feature network of offline datasets: *domain* FID and IS.

Inception FID needs the FID Inception weights and 299x299 inputs; for quick checks on CPU with
digits, MNIST or Fashion-MNIST, jgen trains its own small conv classifier (seconds on a CPU)
and uses its penultimate layer as ``features`` and its 10 class logits as ``logits``. Figures
computed with it are called **domain FID** / **domain IS**: they are comparable only to other
figures of the same network (same dataset, seed and training), never to Inception FID/IS of
papers.

The trained network is cached as ``$JGEN_CACHE/domain/<dataset>.npz`` (default
``~/.cache/jgen``) with its held-out accuracy; training is deterministic given the seed.

  python -m jgen.metrics.domain --dataset digits      # trains (or loads) it, prints accuracy
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util
from PIL import Image

from jgen import errors
from jgen import data as jdata
from jgen.metrics import feature_net as fnet

__all__ = ["DATASETS", "DomainClassifier", "DomainFeatureNet", "DomainSpec", "load_feature_net",
           "train_classifier"]

log = logging.getLogger("jgen")
_VERSION = 1  # bump when the architecture or the training recipe changes (invalidates caches)


@dataclasses.dataclass(frozen=True)
class DomainSpec:
  """Where a domain dataset comes from and the input size of its classifier."""

  source: str | None   # jgen.data.load_source spec; None: must be given (no default location)
  image_size: int      # classifier input (images are resized to it, gray)
  train_steps: int     # Adam steps of the default recipe


DATASETS: dict[str, DomainSpec] = {
    "digits": DomainSpec("digits", 16, 600),
    "mnist": DomainSpec(None, 28, 1500),
    "fashion_mnist": DomainSpec("idx:/usr/share/datasets/fashion-mnist", 28, 1500),
}


class DomainClassifier(nn.Module):
  """Three 3x3 convs (the last two strided), a ReLU feature layer, a linear classifier."""

  width: int = 32
  feature_dim: int = 64
  num_classes: int = 10

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Gray images [N, S, S, 1] in [-1, 1] -> (features [N, feature_dim], logits [N, K])."""
    x = nn.relu(nn.Conv(self.width, (3, 3))(x))
    x = nn.relu(nn.Conv(2 * self.width, (3, 3), strides=2)(x))
    x = nn.relu(nn.Conv(2 * self.width, (3, 3), strides=2)(x))
    features = nn.relu(nn.Dense(self.feature_dim)(x.reshape(x.shape[0], -1)))
    return features, nn.Dense(self.num_classes)(features)


def _prepare(images: np.ndarray, size: int) -> np.ndarray:
  """uint8 images (any size, 1/3 channels) -> uint8 gray [N, size, size, 1].

  Gray conversion (ITU-R 601 luma) and resizing (PIL bilinear, antialiased) are those of
  ``jgen.data.load_source(resize=True)``, so samples and data are treated alike.
  """
  images = fnet.as_uint8(images)
  if images.shape[-1] == 3:
    luma = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    images = np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., None]
  if images.shape[1:3] != (size, size):
    images = np.stack([
        np.asarray(Image.fromarray(x[..., 0]).resize((size, size), Image.Resampling.BILINEAR))
        for x in images])[..., None]
  return images


def _to_float(images: jax.Array) -> jax.Array:
  return images.astype(jnp.float32) / 127.5 - 1.0


def _load_split(spec: DomainSpec, source: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  src = jdata.load_source(source, split=split, image_size=spec.image_size, channels=1,
                          resize=True, cache=True)
  if src.labels is None:
    raise ValueError(f"{source} split {split!r} has no labels; a domain classifier needs them")
  return src.images, src.labels


def _data(spec: DomainSpec, source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                  str]:
  """(train images, labels, held-out images, labels, how the split was made)."""
  test_x, test_y = _load_split(spec, source, "test")
  try:
    train_x, train_y = _load_split(spec, source, "train")
    return train_x, train_y, test_x, test_y, "train/test"
  except jdata.DatasetUnavailableError:
    # Only a test split on this machine (e.g. the MNIST 10k test set): hold out its last 20%.
    cut = int(0.8 * len(test_x))
    return test_x[:cut], test_y[:cut], test_x[cut:], test_y[cut:], "test[:80%]/test[80%:]"


def train_classifier(train_x: np.ndarray, train_y: np.ndarray, *, steps: int, seed: int = 0,
                     batch_size: int = 128, lr: float = 2e-3, num_classes: int = 10
                     ) -> Any:
  """Trains a `DomainClassifier` with Adam (cosine decay) and random 1-pixel shifts.

  Deterministic given `seed` (batches and shifts come from `jax.random.fold_in(key, step)`).

  Args:
    train_x: uint8 gray images [N, S, S, 1].
    train_y: int labels [N].
    steps: Adam steps.
    seed: the seed.
    batch_size: images per step.
    lr: peak learning rate.
    num_classes: number of classes.

  Returns:
    The parameters.
  """
  model = DomainClassifier(num_classes=num_classes)
  xs, ys = jnp.asarray(train_x), jnp.asarray(train_y, jnp.int32)
  key = jax.random.key(seed)
  params = model.init(jax.random.split(key)[0], _to_float(xs[:1]))
  key = jax.random.split(key)[1]
  tx = optax.adam(optax.cosine_decay_schedule(lr, steps))
  size = xs.shape[1]

  def shift(img, k):
    padded = jnp.pad(img, ((1, 1), (1, 1), (0, 0)))
    dy, dx = jax.random.randint(k, (2,), 0, 3)
    return jax.lax.dynamic_slice(padded, (dy, dx, 0), (size, size, 1))

  @jax.jit
  def step(params, opt_state, i):
    k = jax.random.fold_in(key, i)
    idx = jax.random.randint(jax.random.fold_in(k, 0), (batch_size,), 0, len(xs))
    x = jax.vmap(shift)(_to_float(xs[idx]), jax.random.split(jax.random.fold_in(k, 1),
                                                             batch_size))

    def loss_fn(p):
      _, logits = model.apply(p, x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, ys[idx]).mean()

    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  # One jitted step called from Python: on CPU, XLA runs these convolutions ~30x slower inside
  # a `lax.scan` (a while loop) than as a top-level computation.
  opt_state = tx.init(params)
  for i in range(steps):
    params, opt_state = step(params, opt_state, jnp.int32(i))
  return jax.block_until_ready(params)


def _apply_fn(num_classes: int):
  model = DomainClassifier(num_classes=num_classes)
  return jax.jit(lambda params, x: model.apply(params, _to_float(x)))


def accuracy(params: Any, images: np.ndarray, labels: np.ndarray, *, num_classes: int = 10
             ) -> float:
  """Top-1 accuracy of the classifier on uint8 gray images of its input size."""
  apply = _apply_fn(num_classes)
  correct = sum(int(np.sum(np.argmax(apply(params, images[i:i + 500])[1], -1)
                           == labels[i:i + 500])) for i in range(0, len(images), 500))
  return correct / len(images)


class DomainFeatureNet:
  """`FeatureNet` over a trained `DomainClassifier`: penultimate features and class logits."""

  def __init__(self, dataset: str, params: Any, *, image_size: int, meta: dict[str, Any],
               batch_size: int = 500, num_classes: int = 10):
    self.name = f"domain-{dataset}"
    self.feature_dim = DomainClassifier.feature_dim
    self.num_classes = num_classes
    self.image_size = image_size
    self.batch_size = batch_size
    self.meta = meta
    self.params = params
    self._apply = _apply_fn(num_classes)

  def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
    images = _prepare(images, self.image_size)
    feats, logits = [], []
    for i in range(0, len(images), self.batch_size):
      chunk = images[i:i + self.batch_size]
      n = len(chunk)
      if n < self.batch_size and len(images) > self.batch_size:  # one compiled shape
        chunk = np.concatenate([chunk, np.zeros((self.batch_size - n,) + chunk.shape[1:],
                                                chunk.dtype)])
      f, l = self._apply(self.params, chunk)
      feats.append(np.asarray(f[:n], np.float32))
      logits.append(np.asarray(l[:n], np.float32))
    return {"features": np.concatenate(feats), "logits": np.concatenate(logits)}

  def __repr__(self) -> str:
    return (f"DomainFeatureNet({self.name}, held-out accuracy "
            f"{self.meta.get('test_accuracy', float('nan')):.4f})")


def _save(path: str, params: Any, meta: dict[str, Any]) -> None:
  flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
  tmp = path + ".tmp.npz"
  np.savez(tmp, meta=np.array(json.dumps(meta, sort_keys=True)),
           **{f"param:{k}": np.asarray(v) for k, v in flat.items()})
  os.replace(tmp, path)


def _load(path: str) -> tuple[Any, dict[str, Any]]:
  with np.load(path) as f:
    meta = json.loads(str(f["meta"]))
    flat = {k[len("param:"):]: f[k] for k in f.files if k.startswith("param:")}
  return traverse_util.unflatten_dict(flat, sep="/"), meta


def load_feature_net(dataset: str = "digits", *, source: str | None = None, seed: int = 0,
                     steps: int | None = None, batch_size: int = 500, cache: bool = True,
                     **unused: Any) -> DomainFeatureNet:
  """The domain feature network of `dataset`, trained on first use and cached.

  Args:
    dataset: 'digits', 'mnist' or 'fashion_mnist' (see `DATASETS`).
    source: a `jgen.data.load_source` spec of the data (labels needed), e.g. 'idx:DIR' for
      MNIST; default: the dataset's usual location (MNIST has none: pass it).
    seed: training seed.
    steps: Adam steps (default: the dataset's recipe).
    batch_size: images per forward call.
    cache: read/write ``$JGEN_CACHE/domain/<dataset>.npz``.
    **unused: loader options of other feature networks (weights, dtype, mesh), ignored.

  Raises:
    ValueError: unknown dataset.
    jgen.data.DatasetUnavailableError: the data are not on this machine.
  """
  del unused
  if dataset not in DATASETS:
    raise ValueError(f"unknown domain dataset {dataset!r}; expected one of {sorted(DATASETS)}")
  spec = DATASETS[dataset]
  source = source or spec.source
  steps = steps or spec.train_steps
  meta_key = {"version": _VERSION, "dataset": dataset, "seed": seed, "steps": steps,
              "image_size": spec.image_size}
  path = os.path.join(fnet.cache_dir("domain"), f"{dataset}.npz") if cache else None
  if path and os.path.exists(path):
    params, meta = _load(path)
    if all(meta.get(k) == v for k, v in meta_key.items()) and (
        source is None or meta.get("source") == source):
      return DomainFeatureNet(dataset, params, image_size=spec.image_size, meta=meta,
                              batch_size=batch_size)
  if source is None:
    raise jdata.DatasetUnavailableError(
        f"domain:{dataset} has no default data location; pass source='idx:DIR' (MNIST-format "
        f"files) or another jgen.data source spec with labels (config: eval.domain_source)")
  train_x, train_y, test_x, test_y, split_note = _data(spec, source)
  t0 = time.time()
  params = train_classifier(train_x, train_y, steps=steps, seed=seed)
  seconds = time.time() - t0
  acc = accuracy(params, test_x, test_y)
  meta = {**meta_key, "source": source, "split": split_note, "num_train": len(train_x),
          "num_test": len(test_x), "test_accuracy": acc, "train_seconds": round(seconds, 2)}
  log.info("domain:%s classifier: held-out accuracy %.4f (%d images, %s), trained in %.1fs",
           dataset, acc, len(test_x), split_note, seconds)
  if path:
    _save(path, params, meta)
  return DomainFeatureNet(dataset, params, image_size=spec.image_size, meta=meta,
                          batch_size=batch_size)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Trains (or loads from the cache) a domain classifier and prints its held-out accuracy."""
  p = argparse.ArgumentParser(prog="python -m jgen.metrics.domain", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--dataset", default="digits", choices=sorted(DATASETS))
  p.add_argument("--source", default=None, help="jgen.data source spec (e.g. idx:DIR)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--steps", type=int, default=None)
  p.add_argument("--retrain", action="store_true", help="ignore and overwrite the cache")
  p.add_argument("--verbose", action="store_true", help=errors.VERBOSE_HELP)
  args = p.parse_args(argv)
  net = load_feature_net(args.dataset, source=args.source, seed=args.seed, steps=args.steps,
                         cache=not args.retrain)
  if args.retrain:
    _save(os.path.join(fnet.cache_dir("domain"), f"{args.dataset}.npz"), net.params, net.meta)
  m = net.meta
  print(f"domain:{args.dataset} classifier (features {net.feature_dim}-d, {net.num_classes} "
        f"classes): held-out accuracy {m['test_accuracy']:.4f} on {m['num_test']} images "
        f"({m['split']}, {m['num_train']} training images, {m['steps']} steps, seed {m['seed']}, "
        f"trained in {m['train_seconds']}s)")
  return m


if __name__ == "__main__":
  from jgen.xla import set_cpu_xla_flags  # pylint: disable=import-outside-toplevel
  set_cpu_xla_flags()  # before anything starts JAX's backends
  logging.basicConfig(level=logging.INFO, stream=sys.stderr)
  with errors.reported("python -m jgen.metrics.domain"):
    main()
