"""Class-conditional DDPM with classifier-free guidance on CIFAR-10, for a GPU.

  python launch.py --config experiments/ddpm/cond_cifar.py --workdir /tmp/ddpm_cond_cifar
  # from local files instead of tensorflow-datasets:
  python launch.py --config experiments/ddpm/cond_cifar.py --workdir /tmp/ddpm_cond_cifar \
      --config.data.source=folder:../shared/data/cifar10-jpeg.zip
  # variants: :bf16 (bfloat16 compute), :v (v-prediction), :smoke (tiny, CPU)

Ho et al.'s 35.7M-parameter DDPM U-Net and schedule (as ddpm_cifar) with a 10-class label
embedding (+ the null class) added to the timestep embedding; labels are dropped to the null
class with probability 0.1 (Ho & Salimans 2022 found 0.1-0.2 best) and samples use guidance
scale w = 2 (their w' = 1; 1 = plain conditional, 0 = unconditional) with 50-step DDIM. Sweep
`--config.sample.guidance_scale` in `--mode=sample` for the FID / IS trade-off. 400k steps
(half ddpm_cifar's: guidance makes up sample quality); raise train.num_steps for the full run.
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)

ARGS = dict(bf16=False, v=False, smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = _base.cifar(bf16=a.bf16, smoke=a.smoke)
  c.model.num_classes = 10
  c.diffusion.cond_drop_prob = 0.1
  c.sample.guidance_scale = 2.0
  if a.v:
    c.diffusion.prediction = "v"
  if a.smoke:
    c.sample.num = 20
    c.sample.batch_size = 20
  else:
    c.train.num_steps = 400_000
    c.sample.num = 100               # a 10x10 grid: each row the 10 classes
    c.sample.batch_size = 100
  return c
