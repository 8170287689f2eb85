"""Subject fidelity and prior drift of personalized class-conditional models (DreamBooth,
textual inversion, LoRA), measured with the domain classifier (`jgen.metrics.domain`).

For each run (and the base) the models draw samples with their configured sampler and guidance:

* **fidelity**: the mean cosine between domain-classifier features of samples and of the
  subject images, over all (sample, subject) pairs (the DreamBooth paper's DINO score, with
  this network in place of DINO);
* **judged c**: the fraction of samples the classifier labels as the subject's class c (the
  subject images' own fraction is the reference: a classifier of the base's data may not
  recognise the subject's style);
* **drift**: the same fidelity for the plain class c ("7") -- rising when the class forgets its
  prior and turns into the subject (the language drift that prior preservation prevents);
  the domain FID of class-c samples against the real class-c digits, and of the other
  classes' samples against the real digits of those classes.

IP-Adapter: the share of samples prompted by a held-out digit's image (and no text) that the
classifier judges that digit, at lambda = 1 and with the adapter off (lambda = 0: the empty
prompt alone, chance); and the samples' feature cosine to their own reference against another
reference of the same digit (style beyond the class). Imagic: along eta, the share judged the
target digit and the input's digit, and the RMS pixel distance to the input.

This module holds the scores; `jgen.cli.personalization` restores and samples the runs and
prints the Markdown tables. Domain FID of a few hundred samples is biased upward; compare rows
of one table only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from jgen.metrics import fid as fid_lib
from jgen.nn import text as text_lib

__all__ = ["digit_of", "feature_fid", "format_table", "mean_pairwise_cosine",
           "rowwise_cosine", "trainable_count"]


def mean_pairwise_cosine(a: np.ndarray, b: np.ndarray) -> float:
  """mean_{i, j} <a_i, b_j> / (|a_i| |b_j|) of feature rows a [N, D] and b [M, D]."""
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
  b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
  return float(np.mean(a @ b.T))


def rowwise_cosine(a: np.ndarray, b: np.ndarray) -> float:
  """mean_i <a_i, b_i> / (|a_i| |b_i|) of feature rows a, b [N, D]."""
  a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
  b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
  return float(np.mean(np.sum(a * b, axis=1)))


def feature_fid(net, images: np.ndarray, real: np.ndarray) -> float:
  """FID of `images` against `real` images in the features of `net` (the domain classifier)."""
  return fid_lib.fid_from_stats(fid_lib.accumulate(net, images)[0],
                                fid_lib.accumulate(net, real)[0])


def trainable_count(state) -> int:
  """Number of trainable parameters of a train state."""
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.trainable()))


def digit_of(words: Sequence[str]) -> int:
  """The digit a prompt's words name ("seven" or "7").

  Raises:
    ValueError: no word names a digit.
  """
  for w in words:
    if w in text_lib.DIGIT_WORDS:
      return text_lib.DIGIT_WORDS.index(w)
    if w.isdigit() and len(w) == 1:
      return int(w)
  raise ValueError(f"the target prompt {' '.join(words)!r} names no digit")


def format_table(rows: list[dict[str, Any]], subject_class: int = 7) -> str:
  """The subject-fidelity rows as a Markdown table."""
  def f(v, fmt):
    return "—" if v is None else format(v, fmt)

  lines = [f"| run | trainable params | [V] fidelity | [V] judged {subject_class} | "
           f"{subject_class} fidelity (drift) | {subject_class} domain FID | "
           "other classes domain FID |",
           "|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['run']} | {f(r.get('trainable'), ',')} | {f(r.get('fidelity'), '.3f')} "
                 f"| {f(r.get('judged_c'), '.2f')} | {f(r.get('class_fidelity'), '.3f')} | "
                 f"{f(r.get('class_fid'), '.1f')} | {f(r.get('others_fid'), '.1f')} |")
  return "\n".join(lines)
