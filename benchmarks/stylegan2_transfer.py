"""Transfer learning evidence: a converted StyleGAN2 fine-tuned with ADA vs the same from scratch.

    python benchmarks/stylegan2_transfer.py --out /tmp/sg2_transfer [--steps 600]

1. ``source``: trains a StyleGAN2 with NVlabs' network options (`jgen.nn.stylegan2`'s
   ``resample="exact"``, ``conv_clamp``, ``noise_buffers``, ``d_flatten="nchw"``) on MNIST at
   16x16 (``experiments/gan/stylegan2_transfer.py:stage=source``, the 10k MNIST test images in
   ../shared/data/mnist-test);
2. writes it as an NVlabs StyleGAN2-ADA pickle (``G``, ``D``, ``G_ema``, ``augment_pipe``, the
   persistence layout of `tests/convert/nvlabs_pickle.py`; names and layouts from
   `jgen.convert.stylegan2.name_table`, inverted), so no real NVlabs pickle is needed offline;
3. converts it with ``python -m jgen.convert SOURCE.pkl WORKDIR`` (`jgen.convert.pipeline`);
4. fine-tunes it on scikit-learn's digits (the target: 1,797 images of another digit style)
   through ``init_from`` with ADA (``stage=transfer``), and trains the same network from
   random weights (``stage=scratch``): same steps, seed, batch and data;
5. evaluates both, and the converted model before fine-tuning (``--mode=eval``: FID of 1,000
   EMA samples in the digits domain classifier's features, `jgen.metrics.domain`; not
   Inception FID) and prints the table.

Everything runs on one CPU core in about 10 minutes (the times are printed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from jgen import run  # noqa: E402
from jgen.convert import pipeline  # noqa: E402
from jgen.train import inference  # noqa: E402
from jgen.train.config import experiment_module  # noqa: E402
from tests.convert import nvlabs_pickle  # noqa: E402

CONFIG = os.path.join(ROOT, "experiments", "gan", "stylegan2_transfer.py")


def config_of(variant: str, **values: Any):
  module = experiment_module("stylegan2_transfer", beside=CONFIG)
  c = module.get_config(variant)
  for key, value in values.items():
    *parents, last = key.split(".")
    node = c
    for p in parents:
      node = node[p]
    node[last] = value
  return c


def export_pickle(c, workdir: str, path: str) -> None:
  """The latest checkpoint of a jgen StyleGAN2 run as an NVlabs-layout pickle."""
  _, _, state = inference.restore_for_inference(c, workdir)
  with open(path, "wb") as f:
    f.write(nvlabs_pickle.jgen_state_pickle(c, state))


def _fid(result: dict[str, Any]) -> float:
  return float(result["sample_metrics"]["fid"])


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", default="/tmp/sg2_transfer")
  parser.add_argument("--steps", type=int, default=600, help="fine-tuning / scratch steps")
  parser.add_argument("--source_steps", type=int, default=1500)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  times: dict[str, float] = {}
  source_dir = os.path.join(args.out, "source")
  c_src = config_of("stage=source", **{"train.num_steps": args.source_steps,
                                       "train.checkpoint_every": args.source_steps,
                                       "seed": args.seed})
  t = time.time()
  run.main(c_src, workdir=source_dir, mode="train")
  times["source"] = time.time() - t
  pkl = os.path.join(args.out, "source.pkl")
  export_pickle(c_src, source_dir, pkl)
  converted = os.path.join(args.out, "converted")
  t = time.time()
  result = pipeline.convert(pkl, converted)
  times["convert"] = time.time() - t
  c0 = config_of("stage=scratch", seed=args.seed)     # the converted model as it is: step 0
  rows = [("converted", _fid(run.main(c0, workdir=converted, mode="eval")))]
  for stage in ("transfer", "scratch"):
    c = config_of(f"stage={stage}", **{"train.num_steps": args.steps,
                                       "train.checkpoint_every": args.steps, "seed": args.seed})
    if stage == "transfer":
      c.init_from.workdir = converted
    workdir = os.path.join(args.out, stage)
    t = time.time()
    run.main(c, workdir=workdir, mode="train")
    times[stage] = time.time() - t
    t = time.time()
    rows.append((stage, _fid(run.main(c, workdir=workdir, mode="eval"))))
    times[f"{stage} eval"] = time.time() - t
  print(f"\nconverted {pkl} -> {converted}: {result['format']}, {result['method']}")
  print(f"\nStyleGAN2 16x16, MNIST source ({args.source_steps} steps) -> scikit-learn digits, "
        f"{args.steps} steps of batch {c.data.batch_size}, ADA (target 0.6), seed {args.seed}")
  print("| start | domain FID (digits classifier, 1,000 EMA samples) |")
  print("|---|---|")
  names = {"converted": "converted pickle, not fine-tuned (0 steps)",
           "transfer": f"converted pickle, fine-tuned (init_from, {args.steps} steps)",
           "scratch": f"random init (scratch, {args.steps} steps)"}
  for stage, fid in rows:
    print(f"| {names[stage]} | {fid:.2f} |")
  print("\ntimes (s): " + json.dumps({k: round(v, 1) for k, v in times.items()}))


if __name__ == "__main__":
  main()
