"""Agreement of samples with their structural conditions: edge IoU of a ControlNet.

A condition made by ``derived:edges`` is the Sobel magnitude / 4 of a digit
(`jgen.data.derived.sobel_edges`). The same operator on a sample gives the sample's edges;
both are binarised at ``threshold`` (uint8 levels) and compared per image,

    IoU = |E(sample) & E(condition)| / |E(sample) | E(condition)|,

averaged over the held-out conditions. The controlled row uses the ControlNet's sample for each
condition; the uncontrolled row the base model's own samples (the same number, paired with the
conditions in order), which is what agreement by chance looks like.

  python -m jgen.metrics.control --run /tmp/controlnet_digits [--num 300]
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from jgen.data.derived import sobel_edges
from jgen.train.writers import to_uint8

log = logging.getLogger("jgen")

__all__ = ["binary_edges", "edge_iou", "main"]


def binary_edges(images: np.ndarray, threshold: int = 64) -> np.ndarray:
  """bool [N, H, W]: Sobel magnitude / 4 of uint8 images [N, H, W, C] above `threshold`."""
  return np.stack([sobel_edges(np.asarray(x))[..., 0] > threshold for x in images])


def edge_iou(a: np.ndarray, b: np.ndarray) -> float:
  """Mean over images of |a & b| / |a | b| for bool maps [N, H, W] (an empty union counts 1)."""
  a, b = np.asarray(a, bool), np.asarray(b, bool)
  inter = (a & b).reshape(len(a), -1).sum(1)
  union = (a | b).reshape(len(a), -1).sum(1)
  return float(np.mean(np.where(union > 0, inter / np.maximum(union, 1), 1.0)))


def evaluate_run(workdir: str, *, num: int = 300, threshold: int = 64, seed: int = 0
                 ) -> dict[str, Any]:
  """Edge IoU of a ControlNet run's samples, and of its base's uncontrolled samples."""
  from jgen.train import loop, run_record, translations  # pylint: disable=import-outside-toplevel

  config = run_record.latest_config(workdir)
  method, mesh, state = loop.restore_for_inference(config, workdir)
  inputs = translations.held_out_inputs(method, config, num)
  source = inputs["source"]
  hint_edges = to_uint8(source)[..., 0] > threshold
  samples = translations.translate_all(method, state, mesh, source,
                                       batch_size=config.sample.batch_size, seed=seed,
                                       labels=inputs.get("label"))[:, 0]
  out = {"num": len(source), "threshold": threshold,
         "controlled": edge_iou(binary_edges(to_uint8(samples), threshold), hint_edges)}
  base_dir = config.init_from.workdir
  if base_dir:
    base_config = run_record.latest_config(base_dir)
    base_method, base_mesh, base_state = loop.restore_for_inference(base_config, base_dir)
    base = loop.sample_images(loop.jit_sampler(base_method, base_mesh), base_state, base_config,
                              num=len(source), seed=seed)
    out["uncontrolled"] = edge_iou(binary_edges(to_uint8(base), threshold), hint_edges)
  return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  p = argparse.ArgumentParser(prog="python -m jgen.metrics.control", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--run", required=True, help="work directory of a diffusion.controlnet run")
  p.add_argument("--num", type=int, default=300, help="held-out conditions")
  p.add_argument("--threshold", type=int, default=64, help="edge level (uint8) to binarise at")
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO)
  out = evaluate_run(args.run, num=args.num, threshold=args.threshold, seed=args.seed)
  print(f"| samples | edge IoU with the condition (n={out['num']}, threshold "
        f"{out['threshold']}) |\n|---|---|\n| ControlNet | {out['controlled']:.3f} |")
  if "uncontrolled" in out:
    print(f"| base, uncontrolled | {out['uncontrolled']:.3f} |")
  return out


if __name__ == "__main__":
  from jgen.xla import set_cpu_xla_flags  # pylint: disable=import-outside-toplevel
  set_cpu_xla_flags()
  main(sys.argv[1:])
