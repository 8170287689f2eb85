"""Agreement of a ControlNet run's samples with their conditions (`jgen.metrics.control`),
against its base's uncontrolled samples; prints a Markdown table.

  python -m jgen.cli.control --run /tmp/controlnet_digits [--num 300]
  python -m jgen.cli.control --run /tmp/controlnet_fill
  python -m jgen.cli.control --run /tmp/ddpm_cond_fill       # a fill base alone
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from jgen import data as jdata
from jgen import errors
from jgen.metrics.control import FILL_SOURCE, scores
from jgen.train import inference, run_record, sampling, translations
from jgen.xla import set_cpu_xla_flags

__all__ = ["evaluate_run", "main"]


def _uncontrolled(base_dir: str, inputs: dict[str, np.ndarray], fill: bool, threshold: int,
                  seed: int) -> dict[str, float]:
  """The scores of a base run's own samples (for the held-out labels when it is conditional)."""
  config = run_record.latest_config(base_dir)
  method, mesh, state = inference.restore_for_inference(config, base_dir)
  conditional = sampling.labels_for_samples(method, config, 1) is not None
  samples = sampling.sample_images(sampling.jit_sampler(method, mesh), state, config,
                                   num=len(inputs["source"]), seed=seed,
                                   labels=inputs.get("label") if conditional else None)
  return scores(samples, inputs, fill, threshold)


def evaluate_run(workdir: str, *, num: int = 300, threshold: int = 64, seed: int = 0
                 ) -> dict[str, Any]:
  """A ControlNet run's scores and its base's uncontrolled ones (`jgen.metrics.control`).

  ``workdir`` may also be a colour-conditional base trained on ``fill`` itself (e.g.
  ddpm_cond_fill): then only its uncontrolled row is scored, on the held-out fill examples.

  Returns:
    ``{"num", "task" ('edges' or 'fill'), "threshold", "controlled": {score: value} (a
    ControlNet run), "uncontrolled": {...} (its base named in init_from, or the base run)}``,
    scores ``edge_iou`` or ``disc_iou`` and ``color_accuracy``.
  """
  config = run_record.latest_config(workdir)
  if config.method != "diffusion.controlnet":
    if config.data.source != "fill":
      raise errors.ConfigError(f"{workdir} is a {config.method} run on {config.data.source!r}: "
                               "score a diffusion.controlnet run, or a base trained on 'fill'")
    d = config.data
    held_out = jdata.load_source(FILL_SOURCE, split=d.eval_split, image_size=d.image_size)
    batch = jdata.read_batch(held_out, range(min(num, len(held_out))))
    inputs = {"source": batch["source"], "target": batch["target"][:, None],
              "label": batch["label"]}
    return {"num": len(batch["label"]), "task": "fill", "threshold": threshold,
            "uncontrolled": _uncontrolled(workdir, inputs, True, threshold, seed)}
  fill = config.data.source == FILL_SOURCE
  method, mesh, state = inference.restore_for_inference(config, workdir)
  inputs = translations.held_out_inputs(method, config, num)
  samples = translations.translate_all(method, state, mesh, inputs["source"],
                                       batch_size=config.sample.batch_size, seed=seed,
                                       labels=inputs.get("label"))[:, 0]
  out = {"num": len(samples), "task": "fill" if fill else "edges", "threshold": threshold,
         "controlled": scores(samples, inputs, fill, threshold)}
  if config.init_from.workdir:
    out["uncontrolled"] = _uncontrolled(config.init_from.workdir, inputs, fill, threshold, seed)
  return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  p = argparse.ArgumentParser(prog="python -m jgen.cli.control", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--run", required=True, help="work directory of a diffusion.controlnet run "
                 "(or of a base trained on 'fill')")
  p.add_argument("--num", type=int, default=300, help="held-out conditions")
  p.add_argument("--threshold", type=int, default=64, help="edge level (uint8) to binarise at")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--verbose", action="store_true", help=errors.VERBOSE_HELP)
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
  set_cpu_xla_flags()
  with errors.reported("python -m jgen.cli.control"):
    main(sys.argv[1:])
