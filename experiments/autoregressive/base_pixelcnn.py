"""The PixelCNN family's base: network, optimizer and schedule defaults, and the digits recipe.

Every PixelCNN experiment (pixelcnn_digits, pixelcnn_mnist, pixelcnn_cifar) starts from
`get_config()` and sets its data and scale; no experiment file loads another. Loaded by path:
`experiment_module("base_pixelcnn", beside=__file__)`.
"""

import ml_collections

from jgen.train.config import base_config, digits_data, smoke_schedule


def get_config() -> ml_collections.ConfigDict:
  """Gated PixelCNN defaults (`jgen.nn.pixelcnn.PixelCNN` fields), Adam, EMA; no data."""
  c = base_config()
  c.method = "autoregressive.pixelcnn"
  c.model.features = 64
  c.model.num_layers = 8
  c.model.kernel_size = 5        # vertical kernel 3x5, horizontal 1x3
  c.model.num_mixtures = 5       # logistic components per pixel
  c.model.num_classes = 0        # > 0: class-conditional (label bias in every gated layer)
  c.model.null_class = False     # True: a learned null class (label num_classes) for CFG
  c.model.cond_dim = 32
  c.model.dropout = 0.0

  c.pixelcnn = ml_collections.ConfigDict()
  c.pixelcnn.num_bins = 256      # levels per channel (8-bit data)
  c.pixelcnn.window_rows = True  # sample on the receptive-field rows only (False: whole image)
  c.pixelcnn.cond_drop_prob = 0.0  # train with the null class this often (needs null_class)

  c.optim.name = "adam"
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 100
  c.optim.schedule = "cosine"
  c.optim.grad_clip_norm = 10.0

  c.train.num_steps = 2000
  c.train.ema_decay = 0.999
  c.train.ema_warmup = True
  c.train.log_every = 100
  c.train.checkpoint_every = 1000
  c.train.eval_every = 500
  c.train.eval_batches = 4
  c.train.sample_every = 0

  c.sample.num = 64
  c.sample.batch_size = 64
  c.sample.temperature = 1.0     # filters of each pixel's per-bin distribution (1, 0, 1: the
  c.sample.top_k = 0             # model's own; sampling.filter_logits)
  c.sample.top_p = 1.0
  c.sample.guidance_scale = 1.0  # classifier-free guidance w (1: none; needs null_class)
  return c


def digits(c: ml_collections.ConfigDict, *, smoke: bool = False) -> ml_collections.ConfigDict:
  """scikit-learn's digits resized to 16x16 (`smoke`: 8x8, a tiny network, a seconds-long run)."""
  digits_data(c, smoke=smoke)
  if smoke:
    c.model.features = 8
    c.model.num_layers = 2
    c.model.kernel_size = 3
    c.model.num_mixtures = 2
    c.model.cond_dim = 4
    smoke_schedule(c)
  return c
