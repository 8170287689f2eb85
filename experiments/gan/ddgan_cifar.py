"""Denoising diffusion GAN on CIFAR-10 (32x32x3): the paper's setup (Xiao et al. 2022, T = 4,
FID 3.75), for GPU.

  python launch.py --config experiments/gan/ddgan_cifar.py --workdir /tmp/ddgan_cifar
  python launch.py --config experiments/gan/ddgan_cifar.py --workdir /tmp/ddgan_cifar \
      --config.data.source=folder:../shared/data/cifar10-jpeg.zip
  python launch.py --config experiments/gan/ddgan_cifar.py --workdir /tmp/ddgan_cifar --mode=sample

The settings, from the paper and the reference's CIFAR-10 command (NVlabs/denoising-diffusion-gan
README, `train_ddgan.py --dataset cifar10 ...`):

* process: T = 4 (`--num_timesteps 4`), the VP SDE with beta_min = 0.1, beta_max = 20
  discretized at s_i = 1e-3 + (1 - 1e-3) i / 4 (experiments/gan/base_ddgan.py, jgen.gan.ddgan);
* generator: 128 base channels, multipliers (1, 2, 2, 2), 2 residual blocks per level,
  attention at 16x16, no dropout, positional time embedding, tanh output; z of 100 (`--nz 100`)
  through a mapping network of 1 + 4 layers of 256 (`--z_emb_dim 256 --n_mlp 4`). The paper's
  network is NCSN++ with AdaGN (z scales and shifts every group norm); jgen's is the DDPM U-Net
  with z added to the time embedding: 36.2M parameters (the 35.7M DDPM CIFAR-10 U-Net, the
  0.13M embedding projection, the 0.29M mapping network); D 12.7M;
* discriminator: the reference's small time-conditional one (`--ngf 64`: 128, 128, 256, 512,
  512 channels down to 4x4, time embedding 256, minibatch stddev over groups of 4);
* loss: non-saturating, R1 with gamma = 0.02 on the real x_{t-1} every 15th D step
  (`--r1_gamma 0.02 --lazy_reg 15`; `gan.r1_gamma = 0.02 / 15` since jgen's lazy R1 scales the
  penalty by the interval, the reference does not);
* optimizers: Adam, lr 1.6e-4 (G) and 1.25e-4 (D), betas (0.5, 0.9) (`--lr_g 1.6e-4 --lr_d
  1.25e-4 --beta1 0.5 --beta2 0.9`), cosine decay (the reference anneals per epoch to 1e-5,
  here per step to 0), no gradient clipping; EMA of G with decay 0.9999 (`--use_ema`);
* batch 256: `--batch_size 64` per process on 4 V100s (`--num_process_per_node 4`); 1800
  epochs (`--num_epoch 1800`) of 195 steps (50,000 // 256, last batch dropped) = 351,000 steps;
  random horizontal flips.

Variant `:bf16` computes in bfloat16 (parameters stay float32).
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base_ddgan", beside=__file__)

EPOCHS, TRAIN_IMAGES, BATCH = 1800, 50_000, 256

ARGS = dict(bf16=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = _base.get_config()
  c.data.source = "tfds:cifar10"
  c.data.image_size = 32
  c.data.channels = 3
  c.data.batch_size = BATCH
  c.data.random_flip = True
  if a.bf16:
    c.model.dtype = "bfloat16"

  c.train.num_steps = EPOCHS * (TRAIN_IMAGES // BATCH)   # 351,000
  c.train.log_every = 500
  c.train.checkpoint_every = 10_000
  c.train.sample_every = 10_000
  c.train.eval_every = 0

  c.sample.num = 64
  c.sample.batch_size = 64
  c.eval.num_samples = 50_000    # the paper's FID: 50k samples against the training set
  return c
