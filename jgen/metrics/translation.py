"""Metrics of image-to-image translation against known targets, and a judge of domain and content.

Given N held-out sources, their D translations ``outputs`` [N, D, H, W, C] and, where known, the
true translations ``targets`` [N, D, H, W, C] (all float in [-1, 1]):

* ``l1``: mean |output - target| on [0, 1] images (the pix2pix paper's L1 is on [-1, 1]: twice
  this);
* ``psnr``: per image ``10 log10(1 / MSE)`` on [0, 1], averaged over images (dB);
* with content labels ``labels`` [N] (the digit a translation must keep) a **judge**: a small
  `jgen.metrics.domain.DomainClassifier` trained on *real* images to name both the domain and
  the class, with classes (domain, label). Its domains are the D target domains, plus the source
  domain when D = 1 (so that it tells an untranslated image from a translated one). Then:

  - ``content``: the share of outputs of translation d whose predicted class is the source's
    label (content preservation);
  - ``domain_success``: the share whose predicted domain is d;
  - ``judge_accuracy``: the judge's (domain, class) accuracy on the real held-out targets: the
    ceiling of the two figures above.

  The judge is *cross-fitted* on the held-out set: it is trained on the real images of one half
  and judges the outputs of the other half, then the halves swap, so it never judges an output
  whose real counterpart it trained on, and it needs no paired training data (CycleGAN's
  training split has none).
* ``fid``: domain FID (`jgen.metrics.fid`) of each translation's outputs against the real
  targets, in a feature network's space (the digits domain classifier's for digits), averaged
  over the D translations.

The same function scores a baseline: pass ``outputs = source[:, None]`` repeated D times (the
identity mapping) to see what doing nothing scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jgen.metrics import domain
from jgen.metrics import feature_net as fnet
from jgen.metrics import fid as fid_lib
from jgen.ops import image as image_ops

__all__ = ["l1_error", "psnr", "translation_metrics"]


def _unit(x: np.ndarray) -> np.ndarray:
  return (np.asarray(x, np.float64) + 1.0) / 2.0


def _check(outputs: np.ndarray, targets: np.ndarray) -> None:
  if outputs.shape != targets.shape:
    raise ValueError(f"outputs {outputs.shape} and targets {targets.shape} must have one shape "
                     "[N, D, H, W, C]")


def l1_error(outputs: np.ndarray, targets: np.ndarray) -> float:
  """mean |output - target| of images in [-1, 1], measured on [0, 1]."""
  _check(outputs, targets)
  return float(np.mean(np.abs(_unit(outputs) - _unit(targets))))


def psnr(outputs: np.ndarray, targets: np.ndarray) -> float:
  """Mean over images of `jgen.ops.image.psnr`: 10 log10(1 / MSE) on [0, 1] (100 dB at most)."""
  _check(outputs, targets)
  shape = (-1, *np.shape(outputs)[-3:])
  return float(np.mean(image_ops.psnr(np.reshape(outputs, shape), np.reshape(targets, shape))))


def _gray(images: np.ndarray) -> np.ndarray:
  """uint8 gray [N, H, W, 1] of float images in [-1, 1] (the judge's input, at their size)."""
  x = fnet.to_uint8(images)
  return domain._prepare(x, x.shape[1])  # pylint: disable=protected-access


def _domains(source: np.ndarray, targets: np.ndarray) -> list[np.ndarray]:
  """The judge's real images per domain: the D targets, plus the source when D = 1."""
  doms = [targets[:, d] for d in range(targets.shape[1])]
  return [source] + doms if len(doms) == 1 else doms


def _judge(real: list[np.ndarray], labels: np.ndarray, *, steps: int, seed: int
           ) -> tuple[Any, int]:
  """A (domain, label) classifier trained on `real` domain images with their `labels`."""
  num_labels = int(labels.max()) + 1
  xs = np.concatenate([_gray(x) for x in real])
  ys = np.concatenate([d * num_labels + labels for d in range(len(real))])
  params = domain.train_classifier(xs, ys, steps=steps, seed=seed,
                                   num_classes=len(real) * num_labels)
  return params, num_labels


def _predict(params: Any, images: np.ndarray, num_classes: int) -> np.ndarray:
  x = _gray(images)
  apply = domain._apply_fn(num_classes)  # pylint: disable=protected-access
  return np.concatenate([np.argmax(np.asarray(apply(params, x[i:i + 500])[1]), -1)
                         for i in range(0, len(x), 500)])


def translation_metrics(source: np.ndarray, outputs: np.ndarray,
                        targets: np.ndarray | None = None, labels: np.ndarray | None = None, *,
                        feature_net: fnet.FeatureNet | None = None, judge_steps: int = 600,
                        seed: int = 0) -> dict[str, float]:
  """The metrics of the module docstring (those the inputs allow).

  Args:
    source: [N, H, W, C] held-out sources in [-1, 1].
    outputs: [N, D, H, W, C'] their translations.
    targets: [N, D, H, W, C'] the true translations, or None.
    labels: [N] content classes (int), or None (no judge).
    feature_net: features of the domain FID (None: no FID).
    judge_steps: Adam steps of each half's judge.
    seed: the judge's seed.

  Returns:
    {"l1", "psnr", "fid"} with targets, {"content", "domain_success", "judge_accuracy"} with
    targets and labels; also per translation d: "content/<d>", "domain_success/<d>".
  """
  source, outputs = np.asarray(source), np.asarray(outputs)
  if outputs.ndim != 5 or outputs.shape[0] != source.shape[0]:
    raise ValueError(f"outputs must be [N, D, H, W, C] for the N = {source.shape[0]} sources, "
                     f"got {outputs.shape}")
  out: dict[str, float] = {}
  if targets is None:
    return out
  targets = np.asarray(targets)
  out["l1"] = l1_error(outputs, targets)
  out["psnr"] = psnr(outputs, targets)
  d_count = outputs.shape[1]
  if feature_net is not None:
    fids = []
    for d in range(d_count):
      real = fid_lib.GaussianStats(feature_net.feature_dim).update(
          feature_net(fnet.to_uint8(targets[:, d]))["features"])
      fake = fid_lib.GaussianStats(feature_net.feature_dim).update(
          feature_net(fnet.to_uint8(outputs[:, d]))["features"])
      fids.append(fid_lib.fid_from_stats(fake, real))
    out["fid"] = float(np.mean(fids))
  if labels is None:
    return out
  labels = np.asarray(labels, np.int64)
  n = len(labels)
  halves = (np.arange(n) < n // 2, np.arange(n) >= n // 2)
  offset = 1 if d_count == 1 else 0  # judge domain of translation d
  content = np.zeros((d_count,))
  success = np.zeros((d_count,))
  judge_hits = 0.0
  for k, (train, test) in enumerate((halves, halves[::-1])):
    params, num_labels = _judge([x[train] for x in _domains(source, targets)], labels[train],
                                steps=judge_steps, seed=seed + k)
    num_classes = (d_count + offset) * num_labels
    for d in range(d_count):
      pred = _predict(params, outputs[test, d], num_classes)
      content[d] += np.sum(pred % num_labels == labels[test])
      success[d] += np.sum(pred // num_labels == d + offset)
      real = _predict(params, targets[test, d], num_classes)
      judge_hits += np.sum(real == (d + offset) * num_labels + labels[test])
  out["content"] = float(content.sum() / (n * d_count))
  out["domain_success"] = float(success.sum() / (n * d_count))
  out["judge_accuracy"] = float(judge_hits / (n * d_count))
  if d_count > 1:
    for d in range(d_count):
      out[f"content/{d}"] = float(content[d] / n)
      out[f"domain_success/{d}"] = float(success[d] / n)
  return out
