"""ControlNet (`jgen.nn.controlnet`, `diffusion.controlnet`): with the copy loaded from the base
and the zero convolutions at zero, the controlled model's output equals the base's bit for bit
(unconditional and with labels under classifier-free guidance, the hint kept in both branches);
training moves the control branch only; the edge IoU metric against hand-made maps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgen.data
import jgen.run
from jgen.cli import control as control_cli
from jgen.diffusion.guidance import cfg_eps_fn
from jgen.metrics.control import fill_scores, iou
from jgen.nn.conditioning import null_conditions
from jgen.nn.controlnet import ControlledUNet
from jgen.nn.unet import UNet
from jgen.train import init_from as init_from_lib
from jgen.train import load_method
from jgen.train.rules import flat
from tests.conftest import load_experiment


def _randomized(params, seed):
  """Every leaf replaced by noise: no zero-initialised layer hides a difference."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda v: jnp.asarray(rng.standard_normal(v.shape) * 0.2, v.dtype), params)


@pytest.mark.parametrize("num_classes", [0, 3])
def test_zero_init_is_the_base_bit_for_bit(num_classes):
  unet = UNet(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), num_groups=4,
              num_classes=num_classes, dropout=0.0)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((3, 8, 8, 1)), jnp.float32)
  hint = jnp.asarray(rng.uniform(-1, 1, (3, 8, 8, 1)), jnp.float32)
  t = jnp.array([1, 7, 15])
  cond = {"label": jnp.array([0, 2, num_classes])} if num_classes else {}
  base = _randomized(unet.init(jax.random.key(0), x, t, cond or None, train=False), 1)
  model = ControlledUNet(unet)
  fresh = model.init(jax.random.key(2), x, t, {**cond, "hint": hint}, train=False)
  control = dict(fresh["params"]["control"])
  control.update({k: v for k, v in base["params"].items() if k in control})  # the copy
  params = {"params": {"unet": base["params"], "control": control}}
  want = np.asarray(unet.apply(base, x, t, cond or None, train=False))
  got = np.asarray(model.apply(params, x, t, {**cond, "hint": hint}, train=False))
  assert np.abs(want).max() > 0
  np.testing.assert_array_equal(got, want)
  if num_classes:  # guidance: the null branch keeps the hint, and still equals the base's
    null = null_conditions({**cond, "hint": hint}, num_classes=num_classes)
    np.testing.assert_array_equal(np.asarray(null["hint"]), np.asarray(hint))
    guided = cfg_eps_fn(lambda xx, tt, cc: model.apply(params, xx, tt, cc, train=False),
                        {**cond, "hint": hint}, null, 3.0)(x, t)
    plain = cfg_eps_fn(lambda xx, tt, cc: unet.apply(base, xx, tt, cc, train=False),
                       cond, null_conditions(cond, num_classes=num_classes), 3.0)(x, t)
    np.testing.assert_array_equal(np.asarray(guided), np.asarray(plain))


@pytest.fixture(scope="module")
def base_run(ddpm_smoke_run):
  return ddpm_smoke_run


def _config(base_workdir):
  config = load_experiment("personalize/controlnet_digits", "smoke")
  config.init_from.workdir = base_workdir
  return config


def test_loop_run_starts_at_the_base_and_trains_the_control_only(tmp_path, base_run):
  base, _ = init_from_lib.load(init_from_lib.InitFrom(base_run))
  config = _config(base_run)
  config.optim.lr = 0.0  # the state after the steps is the state the loop built
  still = jgen.run.main(config, workdir=str(tmp_path / "still"))
  method = load_method(config)
  batch = jgen.data.read_batch(jgen.data.load_source("derived:edges:digits", split="test",
                                                     image_size=8, channels=1, resize=True),
                               range(4))
  x, hint = jnp.asarray(batch["target"]), jnp.asarray(batch["source"])
  t = jnp.array([1, 5, 10, 19])
  base_unet = method.ddpm.model.unet
  want = base_unet.apply(base, x, t, None, train=False)
  got = method.ddpm.model.apply(still.ema_params, x, t, {"hint": hint}, train=False)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  copied = flat(still.params["params"]["control"])
  for p, v in flat(base["params"]).items():
    if p in copied:
      np.testing.assert_array_equal(np.asarray(copied[p]), np.asarray(v), err_msg=p)

  config = _config(base_run)
  state = jgen.run.main(config, workdir=str(tmp_path / "moving"))
  for p, v in flat(base["params"]).items():
    np.testing.assert_array_equal(np.asarray(flat(state.params)[f"params/unet/{p}"]),
                                  np.asarray(v), err_msg=p)
  assert set(flat(state.emas["ema"])) == {p for p in flat(state.params)
                                          if p.startswith("params/control/")}
  zero = np.asarray(flat(state.params)["params/control/zero_mid/kernel"])
  assert np.abs(zero).max() > 0
  paths = jgen.run.main(config, workdir=str(tmp_path / "moving"), mode="sample")
  assert paths


def test_rules_are_required(base_run):
  config = _config(base_run)
  config.optim.rules = ()
  with pytest.raises(ValueError, match="control branch only"):
    load_method(config)


def test_iou_by_hand():
  a = np.zeros((2, 4, 4), bool)
  b = np.zeros((2, 4, 4), bool)
  a[0, 0, :3] = True          # 3 pixels
  b[0, 0, 1:] = True          # 3 pixels, 2 shared: IoU 2 / 4
  # image 1: both empty -> 1
  assert iou(a, b) == pytest.approx((0.5 + 1.0) / 2)


def test_a_class_conditional_controlnet_translates_by_label():
  """The loop's translations pass the held-out labels (`TranslatesByLabel`): chunk i equals
  `sample_conditional` with the hints, the labels and the key fold_in(key(seed), i)."""
  from jgen.train import mesh as mesh_lib  # pylint: disable=import-outside-toplevel
  from jgen.train import translations  # pylint: disable=import-outside-toplevel

  config = load_experiment("personalize/controlnet_digits", "smoke")
  config.model.num_classes = 10
  config.sample.guidance_scale = 2.0
  method = load_method(config)
  data = jgen.data.read_batch(jgen.data.load_source("derived:edges:digits", split="test",
                                                    image_size=8, channels=1, resize=True),
                              range(6))
  state = method.init(jax.random.key(0), {k: jnp.asarray(v) for k, v in data.items()})
  state = state.replace(params=_randomized(state.params, 3), emas={})
  mesh = mesh_lib.make_mesh()
  got = translations.translate_all(method, state, mesh, data["source"], batch_size=4, seed=5,
                                   labels=data["label"])
  assert got.shape == (6, 1, 8, 8, 1)
  first = method.sample_conditional(state, jax.random.fold_in(jax.random.key(5), 0),
                                    {"hint": jnp.asarray(data["source"][:4]),
                                     "label": jnp.asarray(data["label"][:4])}, 4)
  np.testing.assert_allclose(got[:4, 0], np.asarray(first), atol=1e-5)
  other = translations.translate_all(method, state, mesh, data["source"], batch_size=4,
                                     seed=5, labels=(data["label"] + 1) % 10)
  assert np.abs(other - got).max() > 1e-3  # the label reaches the sampler
  with pytest.raises(ValueError, match="samples for labels too"):
    method.translate(state, jax.random.key(0), jnp.asarray(data["source"]))


def test_fill_scores_against_the_lens_area():
  """Disc IoU of two discs of radius r whose centres are d apart is the lens area over the
  union, 2 r^2 acos(d / 2r) - (d / 2) sqrt(4 r^2 - d^2) over 2 pi r^2 minus it; colour by the
  nearest palette entry of the mean disc colour, a blank sample counting as wrong."""
  from jgen.data.fill import FILL_COLORS, disc_image  # pylint: disable=import-outside-toplevel

  r, d, size = 20.0, 10.0, 128
  target = disc_image(size, 64, 50, r, FILL_COLORS[0][1])
  noise = np.random.default_rng(0).normal(0, 20, (size, size, 3))
  moved = disc_image(size, 64, 50 + d, r, FILL_COLORS[1][1])
  moved = np.clip(np.where(np.all(moved == 255, -1, keepdims=True), moved, moved + noise), 0,
                  255).astype(np.uint8)
  blank = np.full_like(target, 255)
  lens = 2 * r * r * np.arccos(d / (2 * r)) - d / 2 * np.sqrt(4 * r * r - d * d)
  want_iou = lens / (2 * np.pi * r * r - lens)
  got = fill_scores(np.stack([moved, target, blank]), np.stack([target] * 3),
                    np.array([1, 0, 0]))
  assert got["disc_iou"] == pytest.approx((want_iou + 1.0 + 0.0) / 3, abs=0.01)
  assert got["color_accuracy"] == pytest.approx(2 / 3)
  wrong = fill_scores(moved[None], target[None], np.array([0]))
  assert wrong["color_accuracy"] == 0.0
  tinted = np.where(np.all(target == 255, -1, keepdims=True), np.uint8([215, 200, 240]), target)
  assert fill_scores(tinted[None], target[None], np.array([0])) == {"disc_iou": 1.0,
                                                                     "color_accuracy": 1.0}


@pytest.mark.slow
def test_the_fill_task_trains_and_scores(tmp_path):
  """controlnet_fill from ddpm_cond_fill (both :smoke): the run trains and `jgen.cli.control`
  scores it and its colour-conditional base on the same held-out outlines and labels."""

  base = str(tmp_path / "base")
  jgen.run.main(load_experiment("ddpm/cond_fill", "smoke"), workdir=base)
  config = load_experiment("personalize/controlnet_fill", "smoke")
  config.init_from.workdir = base
  run = str(tmp_path / "fill")
  jgen.run.main(config, workdir=run)
  out = control_cli.evaluate_run(run, num=6)
  assert out["task"] == "fill" and out["num"] == 6
  for row in ("controlled", "uncontrolled"):
    assert set(out[row]) == {"disc_iou", "color_accuracy"}
    assert all(0.0 <= v <= 1.0 for v in out[row].values())
  alone = control_cli.evaluate_run(base, num=6)
  assert set(alone) == {"num", "task", "threshold", "uncontrolled"}
  assert alone["uncontrolled"] == out["uncontrolled"]  # the same samples of the same base
