"""Transfer from a converted pix2pix checkpoint against training from scratch, on digits.

  python benchmarks/translation_transfer.py --mnist ../shared/data/mnist-test
  python benchmarks/translation_transfer.py --pretrain_steps 600 --steps 100,200,400 --out /tmp/tt

1. Pretrain pix2pix (experiments/translation/pix2pix_transfer.py's networks: the reference
   U-Net and PatchGAN, instance norm) on a related task: MNIST's edge maps -> digits, 32x32
   (`derived:edges:idx:../shared/data/mnist-test`, the real MNIST 10k test images).
2. Write its generator and discriminator as the reference's ``latest_net_G.pth`` /
   ``latest_net_D.pth`` (`jgen.convert.translation.to_reference`, then ``torch.save``).
3. Convert that folder back with ``python -m jgen.convert FOLDER WORKDIR`` (the converter's
   whole file path: restricted unpickler, architecture from the shapes, work directory).
4. Fine-tune it on scikit-learn's digits (edge maps -> digits, 32x32) for each of ``--steps``
   through ``init_from`` (`pix2pix_transfer.py:init_from=WORKDIR`), and train the same config
   from scratch for the same steps, seed and data.
5. The translation metrics ``--mode=eval`` reports (`jgen.metrics.translation`): L1 and PSNR
   on [0, 1] over the 297 held-out digits (dropout on, the same key), of each run and of the
   converted model before fine-tuning.

Prints one table; the figures quoted in docs/families/translation.md come from its default run.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
import jgen.run  # noqa: E402  (the loop: train)
from jgen.convert import translation as tr  # noqa: E402
from jgen.convert.__main__ import main as convert_main  # noqa: E402
from jgen.train import run_record  # noqa: E402
from jgen.train.checkpoint import Checkpointer  # noqa: E402
from jgen.metrics.translation import translation_metrics  # noqa: E402
from jgen.train import translations  # noqa: E402
from jgen.train.config import experiment_module  # noqa: E402
from jgen.train.inference import restore_for_inference  # noqa: E402

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
MNIST = os.path.join(REPO, os.pardir, "shared", "data", "mnist-test")
KEYS = ("l1", "psnr")


def config(arg: str):
  return experiment_module("pix2pix_transfer",
                           os.path.join(REPO, "experiments", "translation", "_")).get_config(arg)


def export(workdir: str, folder: str, c) -> None:
  """The run's G and D as the reference's latest_net_G.pth / latest_net_D.pth."""
  with Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False) as ckpt:
    params = ckpt.restore(None)["params"]
  arches = {"G": tr.Arch("unet", c.model.num_downs, c.model.g_norm, c.model.ngf,
                         c.data.channels, c.data.channels, c.model.dropout),
            "D": tr.Arch("patch", c.model.n_layers, c.model.d_norm, c.model.ndf,
                         2 * c.data.channels, 1)}
  os.makedirs(folder, exist_ok=True)
  for name, net in (("G", "generator"), ("D", "discriminator")):
    state = tr.to_reference({"params": params[net]}, arches[name])
    tensors = ((k, torch.from_numpy(np.array(v))) for k, v in state.items())
    torch.save(collections.OrderedDict(tensors), os.path.join(folder, f"latest_net_{name}.pth"))


def evaluate(c, workdir: str) -> dict[str, float]:
  """--mode=eval's translation L1 and PSNR over the whole held-out split (its digits judge,
  2 x 600 classifier steps on the same real images for every run, left out)."""
  method, mesh, state = restore_for_inference(c, workdir)
  held_out = translations.held_out_inputs(method, c, None)
  images = translations.translate_all(method, state, mesh, held_out["source"],
                                      batch_size=c.sample.batch_size, seed=c.eval.seed)
  scores = translation_metrics(held_out["source"], images, held_out["target"])
  return {k: float(scores[k]) for k in KEYS}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--pretrain_steps", type=int, default=600)
  parser.add_argument("--steps", default="100,200", help="fine-tuning lengths, comma-separated")
  parser.add_argument("--out", default="/tmp/translation_transfer")
  parser.add_argument("--mnist", default=MNIST)
  args = parser.parse_args()
  if not os.path.isdir(args.mnist):
    sys.exit(f"MNIST idx files not found at {args.mnist} (pass --mnist DIR)")
  shutil.rmtree(args.out, ignore_errors=True)
  t0 = time.time()
  pre = config(f"steps={args.pretrain_steps}")
  pre.data.source = f"derived:edges:idx:{args.mnist}"
  pre.data.split = pre.data.eval_split = "test"  # the 10k MNIST test images are all there is
  pre.train.sample_every = 0
  pre_dir = os.path.join(args.out, "pretrain")
  jgen.run.main(pre, workdir=pre_dir, mode="train")
  folder = os.path.join(args.out, "reference_checkpoints")
  export(pre_dir, folder, pre)
  converted = os.path.join(args.out, "converted")
  if convert_main([folder, converted, "--image_size", "32"]) != 0:
    sys.exit("conversion failed")
  assert run_record.latest_config(converted).model.num_downs == pre.model.num_downs
  rows = {"converted, not fine-tuned": evaluate(config("steps=1"), converted)}
  for steps in (int(n) for n in args.steps.split(",")):
    for name, arg in (("fine-tuned", f"init_from={converted},steps={steps}"),
                      ("from scratch", f"steps={steps}")):
      c = config(arg)
      workdir = os.path.join(args.out, f"{name.replace(' ', '_')}_{steps}")
      jgen.run.main(c, workdir=workdir, mode="train")
      rows[f"{name}, {steps} steps"] = evaluate(c, workdir)
  print(f"\npix2pix edges -> digits (32x32, 297 held-out digits); pretrained "
        f"{args.pretrain_steps} steps on MNIST edges; {time.time() - t0:.0f} s in all")
  print(f"{'run':34s} {'L1':>8s} {'PSNR dB':>8s}")
  for name, r in rows.items():
    print(f"{name:34s} {r['l1']:8.4f} {r['psnr']:8.2f}")


if __name__ == "__main__":
  main()
