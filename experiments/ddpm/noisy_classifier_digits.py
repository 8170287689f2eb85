"""A noise-aware digit classifier p(y | x_t, t) for classifier guidance of ddpm_digits.

  python launch.py --config experiments/ddpm/noisy_classifier_digits.py --workdir /tmp/clf
  python launch.py --config experiments/ddpm/noisy_classifier_digits.py --workdir /tmp/clf \
      --mode=eval

scikit-learn's 8x8 digits resized to 16x16 with ddpm_digits' noise process (base_ddpm: linear
betas, T = 1000), so its EMA parameters can guide a ddpm_digits model
(`jgen.diffusion.classifier_guidance`). Trains on 2 CPU cores in a few minutes; `eval/accuracy`
(t uniform over all steps) and `eval/accuracy_low_noise` (t < T/4) are the numbers to read. The
end-of-training sample grid is mid-gray on purpose: a classifier has no samples. Variant
`:smoke` is a seconds-long run used by the tests.
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base", beside=__file__)

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = _base.get_config()  # the noise process of the DDPM to guide
  c.method = "diffusion.noisy_classifier"

  c.data.source = "digits"
  c.data.image_size = 16
  c.data.channels = 1
  c.data.resize = True
  c.data.batch_size = 64

  c.model.ch = 16
  c.model.ch_mult = (1, 2, 4)
  c.model.num_res_blocks = 1
  c.model.attn_resolutions = ()
  c.model.num_classes = 10
  c.model.dropout = 0.0
  c.model.num_groups = 8

  c.classifier = ml_collections.ConfigDict()
  c.classifier.low_noise_fraction = 0.25   # evaluate() also reports t < 0.25 T

  c.optim.name = "adamw"
  c.optim.lr = 1e-3
  c.optim.weight_decay = 0.05
  c.optim.warmup_steps = 50
  c.optim.schedule = "cosine"
  c.optim.grad_clip_norm = 1.0

  c.train.num_steps = 3000       # about 3 minutes on 2 CPU cores
  c.train.ema_decay = 0.995
  c.train.ema_warmup = True
  c.train.log_every = 50
  c.train.checkpoint_every = 1000
  c.train.sample_every = 0      # the one (gray) grid at the end
  c.train.eval_every = 500
  c.train.eval_batches = 4

  c.sample.num = 16
  c.sample.batch_size = 16

  if a.smoke:
    c.data.image_size = 8
    c.data.batch_size = 8
    c.model.ch = 8
    c.model.ch_mult = (1, 2)
    c.model.attn_resolutions = (4,)
    c.model.num_groups = 4
    c.diffusion.num_timesteps = 20
    c.optim.warmup_steps = 0
    c.optim.schedule = "constant"
    c.train.num_steps = 4
    c.train.log_every = 2
    c.train.checkpoint_every = 4
    c.train.eval_every = 2
    c.train.eval_batches = 1
    c.sample.num = 4
    c.sample.batch_size = 4
  return c
