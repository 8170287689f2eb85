"""StarGAN on CelebA at 128 px, the paper's five attributes (Choi et al. 2018, section 4).

  python launch.py --config experiments/translation/stargan_celeba.py \
      --workdir /tmp/stargan_celeba \
      --config.data.data_dir=/path/to/tensorflow_datasets

Data: tfds `celeb_a` prepared as ArrayRecord under `data.data_dir` (default $TFDS_DATA_DIR or
~/tensorflow_datasets); jgen never downloads (a missing dataset fails at once with
`DatasetUnavailableError`), and machines here have no copy: prepare it where there is network
(`tfds build celeb_a --file_format=array_record`) and point data_dir at it. The source gives
`image` (218 x 178, resized to 128 x 128: the official code center-crops 178 x 178 first, which
jgen's resize does not do) and `attributes`, the 40 flags in sorted name order
(`CELEBA_ATTRIBUTES`); the method reads the columns of black / blond / brown hair, male, young.
Hair colour is an exclusive group: the 12 target domains (`translation_names`) are one hair
colour x {female, male} x {old, young}; training targets are c_org of a random permutation of
the batch, as in the official code.

Recipe as the paper: G with 6 residual blocks (ngf 64), PatchGAN D with 6 stride-2 layers to a
2 x 2 map (ndf 64), WGAN-GP (lambda_gp = 10), lambda_cls = 1, lambda_rec = 10, n_critic = 5,
Adam(1e-4, 0.5, 0.999), batch 16 per update, random horizontal flips, 200k critic iterations =
40k loop steps, learning rates decayed linearly to 0 over the last 100k iterations (20k loop
steps), no EMA. Variant `:smoke` (8 px, tiny networks, 4 steps; still needs the data).
"""

import ml_collections

from jgen.train.config import experiment_module, parse_arg

_base = experiment_module("base_stargan", beside=__file__)

# tfds celeb_a's attribute names, sorted (the column order of TfdsSource's `attributes`).
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings",
    "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young")
SELECTED = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young")

ARGS = dict(smoke=False)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = parse_arg(arg, **ARGS)
  c = _base.stargan_base(batch=16)
  c.data.source = "tfds:celeb_a"
  c.data.split = "train"
  c.data.eval_split = "test"
  c.data.image_size = 128
  c.data.channels = 3
  c.data.resize = True
  c.data.random_flip = True

  c.model.g_features = 64
  c.model.g_blocks = 6
  c.model.d_features = 64
  c.model.cls_kernel = 2        # 128 / 2^6

  c.gan.attributes = tuple(name.lower() for name in SELECTED)
  c.gan.attribute_indices = tuple(CELEBA_ATTRIBUTES.index(name) for name in SELECTED)
  c.gan.exclusive = ((0, 1, 2),)  # one hair colour per target domain
  c.gan.target_sampling = "permute"

  c.train.num_steps = 40_000      # x n_critic = the paper's 200k iterations
  c.optim.schedule = "linear"    # decay over the last 20k loop steps = 100k iterations
  c.train.ema_decay = 0.0
  c.train.log_every = 100
  c.train.checkpoint_every = 2000
  c.train.keep_checkpoints = 3
  c.train.eval_every = 2000
  c.train.eval_batches = 4
  c.train.sample_every = 2000
  if a.smoke:
    c = _base.smoke(c)
  return c
