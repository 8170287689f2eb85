"""Agreement of samples with their structural conditions: edge IoU, disc IoU, colour accuracy.

Edges (a ControlNet on ``derived:edges:...``): a condition is the Sobel magnitude / 4 of an
image (`jgen.data.derived.sobel_edges`). The same operator on a sample gives the sample's
edges; both are binarised at ``threshold`` (uint8 levels) and compared per image,

    IoU(A, B) = |A & B| / |A | B|,

averaged over the held-out conditions.

Fill (a ControlNet on ``derived:outline:fill``, `jgen.data.fill`): the disc of an image is
the set of pixels some channel of which differs from the image's background colour by more than
`DISC_TOLERANCE` levels, the background colour being the per-channel median of the image's
border pixels (white in the data, where every disc keeps a pixel's margin; a sample's may be
tinted, which is not what the ControlNet is asked to fix); the *disc IoU* compares a sample's disc with the held-out target's
(the disc the outline bounds), and the *colour accuracy* is the fraction of samples whose
mean colour over their own disc is nearest (in RGB) to the label's colour among
`FILL_COLORS` (a sample with no disc counts as wrong).

The controlled row uses the ControlNet's sample for each condition (and its label); the
uncontrolled row the base model's own samples (the same number, for the same labels when the
base is conditional), which is what agreement by chance looks like.

  python -m jgen.metrics.control --run /tmp/controlnet_digits [--num 300]
  python -m jgen.metrics.control --run /tmp/controlnet_fill
  python -m jgen.metrics.control --run /tmp/ddpm_cond_fill       # a fill base alone
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from jgen.data.derived import sobel_edges
from jgen.data.fill import FILL_COLORS
from jgen.train.writers import to_uint8

log = logging.getLogger("jgen")

__all__ = ["binary_edges", "disc_masks", "fill_colors", "fill_scores", "iou", "main"]

FILL_SOURCE = "derived:outline:fill"
# Half the smallest max-channel contrast of a fill colour with the white background (pink's
# green channel, 155 levels): a sample's soft edge pixel counts as disc from halfway.
DISC_TOLERANCE = 77


def binary_edges(images: np.ndarray, threshold: int = 64) -> np.ndarray:
  """bool [N, H, W]: Sobel magnitude / 4 of uint8 images [N, H, W, C] above `threshold`."""
  return np.stack([sobel_edges(np.asarray(x))[..., 0] > threshold for x in images])


def iou(a: np.ndarray, b: np.ndarray) -> float:
  """Mean over images of |a & b| / |a | b| for bool maps [N, H, W] (an empty union counts 1)."""
  a, b = np.asarray(a, bool), np.asarray(b, bool)
  inter = (a & b).reshape(len(a), -1).sum(1)
  union = (a | b).reshape(len(a), -1).sum(1)
  return float(np.mean(np.where(union > 0, inter / np.maximum(union, 1), 1.0)))


def disc_masks(images: np.ndarray, tolerance: int = DISC_TOLERANCE) -> np.ndarray:
  """bool [N, H, W]: the pixels of uint8 [N, H, W, 3] images off their border's median colour."""
  x = np.asarray(images, np.int16)
  border = np.concatenate([x[:, 0], x[:, -1], x[:, 1:-1, 0], x[:, 1:-1, -1]], axis=1)
  background = np.median(border, axis=1)[:, None, None]          # [N, 1, 1, 3]
  return np.abs(x - background).max(axis=-1) > tolerance


def fill_colors(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
  """int [N]: index in `FILL_COLORS` nearest to each image's mean colour on its mask (-1
  where the mask is empty)."""
  palette = np.asarray([rgb for _, rgb in FILL_COLORS], np.float64)
  m = np.asarray(masks, np.float64)[..., None]
  count = m.sum(axis=(1, 2))
  mean = (np.asarray(images, np.float64) * m).sum(axis=(1, 2)) / np.maximum(count, 1)
  nearest = np.linalg.norm(mean[:, None] - palette[None], axis=-1).argmin(axis=1)
  return np.where(count[:, 0] > 0, nearest, -1)


def fill_scores(samples: np.ndarray, targets: np.ndarray, labels: np.ndarray
                ) -> dict[str, float]:
  """Disc IoU with the targets and colour accuracy for the labels (uint8 images, see module)."""
  masks = disc_masks(samples)
  return {"disc_iou": iou(masks, disc_masks(targets)),
          "color_accuracy": float(np.mean(fill_colors(samples, masks) == np.asarray(labels)))}


def _scores(samples: np.ndarray, inputs: dict[str, np.ndarray], fill: bool, threshold: int
            ) -> dict[str, float]:
  """The task's scores of samples in [-1, 1] for the held-out `inputs`."""
  if fill:
    return fill_scores(to_uint8(samples), to_uint8(inputs["target"][:, 0]), inputs["label"])
  hint_edges = to_uint8(inputs["source"])[..., 0] > threshold
  return {"edge_iou": iou(binary_edges(to_uint8(samples), threshold), hint_edges)}


def _uncontrolled(base_dir: str, inputs: dict[str, np.ndarray], fill: bool, threshold: int,
                  seed: int) -> dict[str, float]:
  """The scores of a base run's own samples (for the held-out labels when it is conditional)."""
  from jgen.train import loop, run_record  # pylint: disable=import-outside-toplevel

  config = run_record.latest_config(base_dir)
  method, mesh, state = loop.restore_for_inference(config, base_dir)
  conditional = loop.labels_for_samples(method, config, 1) is not None
  samples = loop.sample_images(loop.jit_sampler(method, mesh), state, config,
                               num=len(inputs["source"]), seed=seed,
                               labels=inputs.get("label") if conditional else None)
  return _scores(samples, inputs, fill, threshold)


def evaluate_run(workdir: str, *, num: int = 300, threshold: int = 64, seed: int = 0
                 ) -> dict[str, Any]:
  """A ControlNet run's scores and its base's uncontrolled ones (see module).

  ``workdir`` may also be a colour-conditional base trained on ``fill`` itself (e.g.
  ddpm_cond_fill): then only its uncontrolled row is scored, on the held-out fill examples.

  Returns:
    ``{"num", "task" ('edges' or 'fill'), "threshold", "controlled": {score: value} (a
    ControlNet run), "uncontrolled": {...} (its base named in init_from, or the base run)}``,
    scores ``edge_iou`` or ``disc_iou`` and ``color_accuracy``.
  """
  from jgen import data as jdata  # pylint: disable=import-outside-toplevel
  from jgen.train import loop, run_record, translations  # pylint: disable=import-outside-toplevel

  config = run_record.latest_config(workdir)
  if config.method != "diffusion.controlnet":
    if config.data.source != "fill":
      raise ValueError(f"{workdir} is a {config.method} run on {config.data.source!r}: score a "
                       "diffusion.controlnet run, or a base trained on 'fill'")
    d = config.data
    held_out = jdata.load_source(FILL_SOURCE, split=d.eval_split, image_size=d.image_size)
    batch = jdata.read_batch(held_out, range(min(num, len(held_out))))
    inputs = {"source": batch["source"], "target": batch["target"][:, None],
              "label": batch["label"]}
    return {"num": len(batch["label"]), "task": "fill", "threshold": threshold,
            "uncontrolled": _uncontrolled(workdir, inputs, True, threshold, seed)}
  fill = config.data.source == FILL_SOURCE
  method, mesh, state = loop.restore_for_inference(config, workdir)
  inputs = translations.held_out_inputs(method, config, num)
  samples = translations.translate_all(method, state, mesh, inputs["source"],
                                       batch_size=config.sample.batch_size, seed=seed,
                                       labels=inputs.get("label"))[:, 0]
  out = {"num": len(samples), "task": "fill" if fill else "edges", "threshold": threshold,
         "controlled": _scores(samples, inputs, fill, threshold)}
  if config.init_from.workdir:
    out["uncontrolled"] = _uncontrolled(config.init_from.workdir, inputs, fill, threshold, seed)
  return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  p = argparse.ArgumentParser(prog="python -m jgen.metrics.control", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--run", required=True, help="work directory of a diffusion.controlnet run "
                 "(or of a base trained on 'fill')")
  p.add_argument("--num", type=int, default=300, help="held-out conditions")
  p.add_argument("--threshold", type=int, default=64, help="edge level (uint8) to binarise at")
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO)
  out = evaluate_run(args.run, num=args.num, threshold=args.threshold, seed=args.seed)
  if out["task"] == "fill":
    print(f"| samples (n={out['num']}) | disc IoU with the target | colour accuracy |\n"
          "|---|---|---|")
    line = "| {} | {disc_iou:.3f} | {color_accuracy:.3f} |"
  else:
    print(f"| samples | edge IoU with the condition (n={out['num']}, threshold "
          f"{out['threshold']}) |\n|---|---|")
    line = "| {} | {edge_iou:.3f} |"
  if "controlled" in out:
    print(line.format("ControlNet", **out["controlled"]))
  if "uncontrolled" in out:
    print(line.format("base, uncontrolled", **out["uncontrolled"]))
  return out


if __name__ == "__main__":
  from jgen.xla import set_cpu_xla_flags  # pylint: disable=import-outside-toplevel
  set_cpu_xla_flags()
  main(sys.argv[1:])
