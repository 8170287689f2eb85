"""The base of StarGAN experiments (`method = "gan.stargan"`, Choi et al. 2018).

Experiment files load this module by path (`experiment_module("base_stargan", beside=__file__)`)
and never each other. `stargan_base()` holds the paper's training recipe; the digits and CelebA
experiments set their data, domains and network sizes.

Fields beyond `jgen.train.config.base_config`:

* `model.g_features` (ngf), `g_down` (stride-2 stages), `g_blocks` (residual blocks),
  `d_features` (ndf), `cls_kernel` (side of D's last feature map = its class head's kernel; D
  has log2(image_size / cls_kernel) stride-2 layers: 6 at 128 px with 2).
* `gan.domains`: synthetic domains, names of `jgen.gan.domains.TRANSFORMS` (the digits task),
  or `()`; `gan.attributes` + `gan.attribute_indices`: names and columns of
  `batch["attributes"]` (tfds celeb_a), or `()`; exactly one of the two is set.
* `gan.exclusive`: groups of attribute indices of which every target domain sets exactly one
  (hair colour); `gan.target_sampling`: 'uniform' over the target table or 'permute' (the
  official code).
* `gan.n_critic` (5), `gan.lambda_gp` (10), `gan.lambda_cls` (1), `gan.lambda_rec` (10),
  `gan.lambda_id` (0: the paper has no identity term; > 0 adds lambda_id E|x - G(x, c_org)|),
* `gan.lambda_nce` (0: none, the paper), `gan.nce_layers` (names of G's encoder features,
  `jgen.nn.stargan.encoder_layers`), `gan.nce_tau`, `gan.nce_patches`, `gan.nce_features`,
  `gan.nce_query`: the PatchNCE content term of CUT (Park et al. 2020), `jgen.gan.stargan`'s
  docstring.
* `optim` is G's optimizer (`optim.schedule = "linear"` holds the learning rate, then decays it
  linearly to 0 from the fraction `optim.decay_from` of the run, for both networks); `optim_d`
  follows it field by field unless set (as in base_gan).
* `train.ema_decay`: EMA of G for translation and evaluation (0: none, as the paper).

`data.batch_size` is n_critic x the per-update batch: critic update k reads rows k, k + 5, ...;
the generator update reads the last chunk. `train.num_steps` counts generator updates (loop
steps); the paper's "iterations" are critic updates (n_critic per loop step).
"""

import ml_collections

from jgen.train.config import base_config, experiment_module

_gan = experiment_module("../gan/base", beside=__file__)


def stargan_base(*, batch: int, n_critic: int = 5) -> ml_collections.ConfigDict:
  """The paper's recipe; `batch` images per network update."""
  c = base_config()
  c.method = "gan.stargan"
  c.data.batch_size = n_critic * batch

  c.model.g_features = 64
  c.model.g_down = 2
  c.model.g_blocks = 6
  c.model.d_features = 64
  c.model.cls_kernel = 2

  c.gan = ml_collections.ConfigDict()
  c.gan.domains = ()
  c.gan.attributes = ()
  c.gan.attribute_indices = ()
  c.gan.exclusive = ()
  c.gan.target_sampling = "uniform"
  c.gan.n_critic = n_critic
  c.gan.lambda_gp = 10.0
  c.gan.lambda_cls = 1.0
  c.gan.lambda_rec = 10.0
  c.gan.lambda_id = 0.0
  c.gan.lambda_nce = 0.0       # PatchNCE content term (CUT; not in the paper)
  c.gan.nce_layers = ()
  c.gan.nce_tau = 0.07
  c.gan.nce_patches = 256
  c.gan.nce_features = 256
  c.gan.nce_query = "way_back"

  c.optim.name = "adam"
  c.optim.lr = 1e-4
  c.optim.b1 = 0.5
  c.optim.b2 = 0.999
  c.optim.grad_clip_norm = 0.0
  c.optim.schedule = "constant"
  c.optim.decay_from = 0.5
  c.optim_d = _gan.follow_optim()

  c.train.ema_decay = 0.0
  c.train.ema_warmup = True
  c.sample.num = 16
  c.sample.batch_size = 16
  return c


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Seconds-long variant: 8 px, tiny nets, 4 steps, 2 images per update."""
  c.data.image_size = 8
  c.data.batch_size = 2 * c.gan.n_critic
  c.model.g_features = 4
  c.model.g_down = 1
  c.model.g_blocks = 1
  c.model.d_features = 4
  c.model.cls_kernel = 2
  c.optim.schedule = "linear"
  c.train.num_steps = 4
  c.train.log_every = 2
  c.train.checkpoint_every = 4
  c.train.sample_every = 0
  c.train.eval_every = 4
  c.train.eval_batches = 1
  c.sample.num = 4
  c.sample.batch_size = 4
  return c
