"""Gated PixelCNN: causality of every shifted layer and of the whole network by gradients over
every position, bits/dim against SciPy, the sampler, and the method through the whole loop."""

import math
import os
from dataclasses import replace as dataclasses_replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgen.run
from jgen.ops import likelihoods as lik
from jgen.autoregressive.pixelcnn import ConditionalPixelCNNMethod, PixelCNNMethod, make_method
from jgen.nn import pixelcnn as pc
from jgen.train.optim import make_optimizer
from tests.autoregressive.test_mixture import scipy_log_prob
from tests.conftest import checkpoint_steps, load_experiment

H = W = 5


def dependence(fn, x):
  """[N, N] bool (N = H W): output position p (raster) depends on input position q, from the
  Jacobian of `fn` ([1, H, W, Ci] -> [1, H, W, Co]) with the output channels summed with random
  weights (a structural zero stays exactly zero; a real dependence cancelling is measure-zero)."""
  def projected(x):
    out = fn(x)
    return out @ jax.random.normal(jax.random.key(99), (out.shape[-1],))

  jac = jax.jit(jax.jacfwd(projected))(x)                             # [1, H, W, 1, H, W, Ci]
  n = x.shape[1] * x.shape[2]
  return np.asarray(jnp.abs(jac).sum(axis=(0, 3, 6)) > 0).reshape(n, n)


def expected(rule):
  """[H W, H W] bool from `rule(i, j, i2, j2)`: output (i, j) may read input (i2, j2)."""
  return np.array([[rule(p // W, p % W, q // W, q % W) for q in range(H * W)]
                   for p in range(H * W)])


def layer_fn(make, x, seed=0):
  """`x -> make()(x)` with freshly initialized parameters (a conv wrapped in a module)."""
  class Wrap(pc.nn.Module):
    @pc.nn.compact
    def __call__(self, x):
      return make()(x)

  params = Wrap().init(jax.random.key(seed), x)
  return lambda x: Wrap().apply(params, x)


@pytest.fixture
def x1():
  return jax.random.normal(jax.random.key(1), (1, H, W, 2))


def test_shifts_and_shifted_convs_read_exactly_their_window(x1):
  np.testing.assert_array_equal(dependence(pc.down_shift, x1),
                                expected(lambda i, j, a, b: a == i - 1 and b == j))
  np.testing.assert_array_equal(dependence(pc.right_shift, x1),
                                expected(lambda i, j, a, b: a == i and b == j - 1))
  for kh, kw in [(2, 3), (3, 5), (1, 3)]:
    got = dependence(layer_fn(lambda: pc.down_shifted_conv(3, (kh, kw)), x1), x1)
    np.testing.assert_array_equal(got, expected(
        lambda i, j, a, b: i - kh < a <= i and abs(b - j) <= (kw - 1) // 2))
  for kh, kw in [(1, 2), (2, 2), (1, 3)]:
    got = dependence(layer_fn(lambda: pc.down_right_shifted_conv(3, (kh, kw)), x1), x1)
    np.testing.assert_array_equal(got, expected(lambda i, j, a, b: i - kh < a <= i
                                                and j - kw < b <= j))
  with pytest.raises(ValueError, match="kw odd"):
    pc.down_shifted_conv(3, (2, 2))


@pytest.mark.parametrize("conditional", [False, True])
def test_gated_layer_keeps_both_streams_causal(conditional):
  layer = pc.GatedLayer(features=3, kernel_size=3)
  v, h = jax.random.normal(jax.random.key(2), (2, 1, H, W, 3))
  cond = jnp.ones((1, 4)) if conditional else None
  params = layer.init(jax.random.key(3), v, h, cond, train=False)

  def out(i, v, h):
    return layer.apply(params, v, h, cond, train=False)[i]

  # v' reads v in rows <= i only (v itself sees rows < i of the image); never h.
  rows = expected(lambda i, j, a, b: a <= i)
  assert np.all(dependence(lambda v: out(0, v, h), v) <= rows)
  assert not dependence(lambda h: out(0, v, h), h).any()
  # h' reads h at raster positions <= its own, and v's features of rows <= i.
  assert np.all(dependence(lambda h: out(1, v, h), h) <= expected(lambda i, j, a, b: a * W + b
                                                                  <= i * W + j))
  assert np.all(dependence(lambda v: out(1, v, h), v) <= rows)
  # ... and within those windows the layer does read (the residual and the kernels).
  assert (dependence(lambda h: out(1, v, h), h)[12, 11]
          and dependence(lambda v: out(1, v, h), v)[12, 7])


@pytest.mark.parametrize("channels,kernel_size,num_layers", [(1, 3, 3), (3, 5, 1), (3, 3, 0)])
def test_network_output_at_each_pixel_reads_exactly_the_earlier_pixels(channels, kernel_size,
                                                                       num_layers):
  model = pc.PixelCNN(channels=channels, features=4, num_layers=num_layers,
                      kernel_size=kernel_size, num_mixtures=2, num_classes=3, cond_dim=2)
  x = jax.random.uniform(jax.random.key(4), (1, H, W, channels), minval=-1, maxval=1)
  labels = {"label": jnp.array([2])}
  params = model.init(jax.random.key(5), x, labels)
  dep = dependence(lambda x: model.apply(params, x, labels), x)
  earlier = expected(lambda i, j, a, b: a * W + b < i * W + j)
  # Causal: nothing at or after pixel p (including p's own channels) reaches the output at p.
  assert not np.any(dep & ~earlier)
  if num_layers >= 3 or kernel_size == 5:
    # No blind spot: deep enough (see jgen.nn.pixelcnn's receptive field), every earlier pixel
    # reaches the output, including those above-right that a masked 3x3 stack would miss.
    np.testing.assert_array_equal(dep, earlier)
  else:
    # The first ('A') layer alone: the head reads the horizontal stack, which sees the kh = 2
    # pixels to the left (the vertical stack joins it in the gated layers).
    np.testing.assert_array_equal(dep, expected(lambda i, j, a, b: a == i and j - 2 <= b < j))
  if num_layers == 0:
    return
  # The label reaches every output (through the gated layers' biases).
  other = model.apply(params, x, {"label": jnp.array([0])})
  assert np.all(np.abs(np.asarray(other - model.apply(params, x, labels))).sum(-1) > 0)


@pytest.mark.parametrize("kernel_size,num_layers,rows", [(3, 1, 4), (5, 1, 6), (3, 3, 6)])
def test_receptive_rows_is_exact(kernel_size, num_layers, rows):
  model = pc.PixelCNN(channels=1, features=4, num_layers=num_layers, kernel_size=kernel_size,
                      num_mixtures=2)
  assert model.receptive_rows == rows
  h, w = 9, 3
  x = jax.random.uniform(jax.random.key(6), (1, h, w, 1), minval=-1, maxval=1)
  params = model.init(jax.random.key(7), x)
  dep = dependence(lambda x: model.apply(params, x), x).reshape(h, w, h, w)
  rows_read = dep.any(axis=(1, 3))                                    # [out row, in row]
  np.testing.assert_array_equal(rows_read, np.array([[i - rows < a <= i for a in range(h)]
                                                     for i in range(h)]))


def test_windowed_sampler_equals_the_whole_image_sampler():
  method = tiny_method(channels=3)
  method = dataclasses_replace(method, model=dataclasses_replace(method.model, num_layers=1),
                               image_shape=(9, 4, 3))
  state = perturbed_state(method)
  windowed = jax.jit(method.sample, static_argnums=2)(state, jax.random.key(0), 6)
  full = jax.jit(dataclasses_replace(method, window_rows=False).sample, static_argnums=2)(
      state, jax.random.key(0), 6)
  np.testing.assert_array_equal(windowed, full)


def tiny_method(channels=3, num_classes=0):
  model = pc.PixelCNN(channels=channels, features=8, num_layers=2, kernel_size=3,
                      num_mixtures=3, num_classes=num_classes, cond_dim=4)
  return PixelCNNMethod(model=model, tx=make_optimizer({"name": "adam", "lr": 1e-3}),
                        image_shape=(4, 4, channels))


def perturbed_state(method, seed=0):
  """An init state with every parameter (biases included) randomized, so that the first pixel's
  mixture is not the all-zeros one."""
  state = method.init(jax.random.key(seed), {"image": jnp.zeros((1, *method.image_shape))})
  leaves, tree = jax.tree.flatten(state.params)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  noisy = [p + 0.3 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)]
  params = jax.tree.unflatten(tree, noisy)
  return state.replace(params=params, emas={"ema": params})


def test_bits_per_dim_matches_scipy():
  method = tiny_method(channels=3)
  state = perturbed_state(method)
  levels = np.random.default_rng(0).integers(0, 256, size=(3, 4, 4, 3))
  x = jnp.asarray(levels / 127.5 - 1.0, jnp.float32)
  metrics = method.evaluate(state, {"image": x}, jax.random.key(0))
  out = method.model.apply({"params": state.params}, x)
  mix = lik.split_mixture_params(out, 3, 3)
  log_p = scipy_log_prob(x, mix, 256).sum(axis=(1, 2))
  np.testing.assert_allclose(float(metrics["bpd"]), np.mean(-log_p / (48 * math.log(2))),
                             rtol=1e-5)
  np.testing.assert_allclose(float(metrics["nll"]), -np.mean(log_p), rtol=1e-5)
  with pytest.raises(ValueError, match="built for images of shape"):
    method.log_prob(state.params, jnp.zeros((1, 5, 4, 3)))


def test_sampler_valid_levels_deterministic_and_first_pixel_distribution():
  method = tiny_method(channels=1)
  state = perturbed_state(method, seed=3)
  sample = jax.jit(method.sample, static_argnums=2)
  a = sample(state, jax.random.key(7), 4000)
  levels = np.asarray((a + 1) * 127.5)
  np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)
  assert levels.min() >= 0 and levels.max() <= 255 and levels.std() > 0
  np.testing.assert_array_equal(a[:8], sample(state, jax.random.key(7), 8))
  assert not np.array_equal(a[:8], sample(state, jax.random.key(8), 8))
  # Pixel (0, 0) reads no pixel: its draws follow the mixture of any canvas's output at (0, 0).
  out = method.model.apply({"params": state.params}, jnp.zeros((1, 4, 4, 1)))
  mix = lik.split_mixture_params(jnp.broadcast_to(out[:, 0, 0], (256, out.shape[-1])), 1, 3)
  values = jnp.arange(256.0)[:, None] / 127.5 - 1.0
  p = np.exp(np.asarray(lik.logistic_mixture_log_prob(values, mix)))
  freq = np.bincount(np.round(levels[:, 0, 0, 0]).astype(int), minlength=256) / len(levels)
  assert 0.5 * np.abs(freq - p).sum() < 0.08   # 4,000 draws over 256 levels: noise ~0.05


def guided_method(**kw):
  model = pc.PixelCNN(channels=1, features=8, num_layers=1, kernel_size=3, num_mixtures=3,
                      num_classes=4, null_class=True, cond_dim=4)
  return ConditionalPixelCNNMethod(model=model, tx=make_optimizer({"name": "adam", "lr": 1e-3}),
                                   image_shape=(5, 4, 1), **kw)


def test_guidance_contrasts_the_label_with_the_learned_null_class():
  method = guided_method(cond_drop_prob=0.25)
  state = perturbed_state(method, seed=5)
  assert state.params["label_embed"]["embedding"].shape == (5, 4)   # 4 classes + the null row
  # Training drops each label to the null class (4) with probability 0.25.
  labels = jnp.arange(4000) % 4
  dropped = method.training_conditions({"image": jnp.zeros((4000, 5, 4, 1)), "label": labels},
                                       jax.random.key(0))["label"]
  is_null = np.asarray(dropped) == 4
  np.testing.assert_array_equal(np.asarray(dropped)[~is_null], np.asarray(labels)[~is_null])
  assert abs(is_null.mean() - 0.25) < 0.03

  def draw(w, label, window_rows=True, temperature=1.0):
    m = dataclasses_replace(method, window_rows=window_rows, temperature=temperature)
    fn = jax.jit(lambda p, l: m.sample_images(p, jax.random.key(3), 6, {"label": l},
                                              guidance_scale=w))
    return np.asarray(fn(state.params, jnp.full((6,), label, jnp.int32)))

  # w = 0 is the null class alone: the label does not matter; w = 3 follows the label.
  np.testing.assert_array_equal(draw(0.0, 0), draw(0.0, 2))
  assert not np.array_equal(draw(3.0, 0), draw(3.0, 2))
  # The window trick holds for the guided sampler (two passes per step) as for the plain one.
  np.testing.assert_array_equal(draw(3.0, 1), draw(3.0, 1, window_rows=False))
  # Temperature alone (w = 1) goes through the per-bin sampler: valid levels.
  levels = (draw(1.0, 1, temperature=0.5) + 1) * 127.5
  np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)

  no_null = dataclasses_replace(method.model, null_class=False)
  with pytest.raises(ValueError, match="null class"):
    ConditionalPixelCNNMethod(model=no_null, tx=method.tx, image_shape=(5, 4, 1),
                              guidance_scale=2.0)
  with pytest.raises(ValueError, match="null class"):
    ConditionalPixelCNNMethod(model=no_null, tx=method.tx, image_shape=(5, 4, 1),
                              cond_drop_prob=0.1)
  with pytest.raises(ValueError, match="top_p"):
    guided_method(top_p=0.0)
  config = load_experiment("autoregressive/pixelcnn_digits", "uncond,smoke")
  config.sample.guidance_scale = 2.0
  with pytest.raises(ValueError, match="class-conditional"):
    make_method(config)


def test_loop_train_eval_sample_with_labels(tmp_path):
  config = load_experiment("autoregressive/pixelcnn_digits", "smoke")
  workdir = str(tmp_path)
  state = jgen.run.main(config, workdir=workdir, mode="train")
  assert int(state.step) == config.train.num_steps == 4 and checkpoint_steps(workdir) == [4]
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))

  scalars = jgen.run.main(config, workdir=workdir, mode="eval")
  assert scalars["step"] == 4 and 0.5 < scalars["bpd"] < 9.0
  np.testing.assert_allclose(scalars["nll"], scalars["bpd"] * 64 * math.log(2), rtol=1e-5)
  # p(x) = mean_y p(x|y) <= max_y p(x|y): within log2(10) / 64 bits/dim of the true label's.
  assert scalars["bpd_marginal"] <= scalars["bpd"] + math.log2(10) / 64 + 1e-4

  config.sample.labels = "3"
  paths = jgen.run.main(config, workdir=workdir, mode="sample")
  assert paths["png"].endswith("pixelcnn.png") or "pixelcnn" in os.path.basename(paths["png"])
  saved = np.load(paths["npz"])
  assert saved["images"].shape == (8, 8, 8, 1) and saved["images"].dtype == np.uint8
  np.testing.assert_array_equal(saved["labels"], np.full(8, 3))

  method = make_method(config)
  with pytest.raises(ValueError, match="class-conditional"):
    method.log_prob(state.params, jnp.zeros((2, 8, 8, 1)), None)


@pytest.mark.parametrize("name,variants", [
    ("autoregressive/pixelcnn_digits", [None, "smoke", "uncond", "uncond,smoke"]),
    ("autoregressive/pixelcnn_mnist", [None, "smoke", "uncond"]),
    ("autoregressive/pixelcnn_cifar", [None, "smoke"])])
def test_configs_build_their_methods(name, variants):
  for arg in variants:
    config = load_experiment(name, arg)
    method = make_method(config)
    assert method.image_shape[-1] == config.data.channels == method.model.channels
    assert (method.model.num_classes > 0) == hasattr(method, "num_classes")
  cifar = load_experiment("autoregressive/pixelcnn_cifar")
  assert (cifar.model.features, cifar.model.num_layers, cifar.model.num_mixtures,
          cifar.model.dropout, cifar.optim.lr) == (160, 30, 10, 0.5, 1e-3)
  with pytest.raises(ValueError, match="unknown config argument"):
    load_experiment(name, "nope")


def test_digits_config_reads_the_whole_image_above_each_pixel():
  """Issue 37: with 3x3 kernels the digits PixelCNN's output at row i read rows i - 8 .. i only
  (9 of 16), so a digit's lower half was drawn without its upper half: 34% of its samples
  showed the asked class. The config's field must span the image."""
  for arg in (None, "uncond"):
    config = load_experiment("autoregressive/pixelcnn_digits", arg)
    model = make_method(config).model
    assert model.receptive_rows >= config.data.image_size == 16
