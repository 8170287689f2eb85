"""NVlabs StyleGAN2-ADA pickles: restricted reading, conversion and parity with the reference.

Fixture: ``benchmarks/stylegan2_reference.py --nvlabs CHECKOUT`` (tiny random NVlabs G and D,
every tensor redrawn; outputs of the reference on CPU). The tests rebuild a pickle with NVlabs'
exact persistence layout from its arrays (`tests/convert/nvlabs_pickle.py`: no NVlabs file and no
real ``.pkl`` is in the repository), read it without torch, convert it and compare.

Tolerance: 2e-5 times the output's largest magnitude (at least 2e-5 absolute). The measured
gaps are 2.8e-6 on images of magnitude 4.8 and 6e-7 on scores of 0.65 (float32 convolutions
summed in another order: XLA's VALID conv vs torch's transposed conv + upfirdn2d, the reference's
fused grouped conv vs jgen's modulate-conv-demodulate); a border error of the old resampling is
0.1 .. 2 (`test_default_options_differ_at_the_border`), so the bound separates the two by 4
orders of magnitude.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen import errors
from jgen.convert import pipeline
from jgen.convert.__main__ import main as convert_main
from jgen.convert import stylegan2 as sg2_convert
from jgen.gan.stylegan2 import make_method, truncate
from jgen.metrics import weights
from jgen.nn import stylegan2 as nets
from jgen.train.config import experiment_module
from tests.convert import nvlabs_pickle

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "stylegan2.npz")
EXPERIMENTS = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "gan")
VARIANTS = ("uncond", "cond")


@pytest.fixture(scope="module")
def fixture() -> dict[str, np.ndarray]:
  with np.load(FIXTURE) as f:
    return {k: f[k] for k in f.files}


def _part(fx: dict[str, np.ndarray], variant: str, net: str) -> dict[str, np.ndarray]:
  prefix = f"{variant}/{net}/"
  return {k[len(prefix):]: v for k, v in fx.items() if k.startswith(prefix)}


def _kwargs(fx: dict[str, np.ndarray], variant: str, net: str) -> dict:
  return json.loads(str(fx[f"{variant}/{net}_kwargs"]))


def _pickle_bytes(fx, variant: str, *, g_kwargs=None, extra=None, p: float = 0.25) -> bytes:
  g, d = _part(fx, variant, "G"), _part(fx, variant, "D")
  g_kwargs = g_kwargs or _kwargs(fx, variant, "G")
  nets_ = {"G": ("Generator", g, g_kwargs), "G_ema": ("Generator", g, g_kwargs),
           "D": ("Discriminator", d, _kwargs(fx, variant, "D")),
           "augment_pipe": ("AugmentPipe", {"p": np.float32(p)}, {"xflip": 1})}
  return nvlabs_pickle.network_pickle(nets_, {
      "training_set_kwargs": nvlabs_pickle.easydict({"resolution": 16}), **(extra or {})})


def _write(tmp_path, name: str, data: bytes) -> str:
  path = os.path.join(tmp_path, name)
  with open(path, "wb") as f:
    f.write(data)
  return path


def _close(got, want, what: str) -> None:
  got, want = np.asarray(got), np.asarray(want)
  tol = 2e-5 * max(1.0, float(np.abs(want).max()))
  err = float(np.abs(got - want).max())
  assert err <= tol, f"{what}: max |jgen - reference| = {err:.3g} > {tol:.3g}"


def _config(values):
  config = experiment_module("stylegan2_transfer", beside=os.path.join(
      EXPERIMENTS, "x.py")).get_config(None)
  pipeline._overrides(config, {**values, "init_from.workdir": "",  # pylint: disable=protected-access
                               "data.batch_size": 4})
  return config


@pytest.mark.parametrize("variant", VARIANTS)
def test_converted_pickle_matches_the_reference(fixture, tmp_path, variant):
  path = _write(tmp_path, "net.pkl", _pickle_bytes(fixture, variant))
  converted = sg2_convert.read(path)
  assert converted["ada_p"] == pytest.approx(0.25)
  method = make_method(_config(converted["values"]))
  g, d = converted["ema"], converted["params"]["discriminator"]
  labels = fixture[f"{variant}/labels"] if method.num_classes else None
  w = method.map(g, fixture[f"{variant}/z"], labels)
  _close(w, fixture[f"{variant}/w"], "mapping w")
  w_avg = converted["w_avg"]
  _close(truncate(w, w_avg, 0.7), fixture[f"{variant}/ws_trunc"][:, 0], "truncated w")
  img = method.render(g, w_avg, fixture[f"{variant}/z"], labels, jax.random.key(0), psi=0.7,
                      noise_mode="const")
  ref = fixture[f"{variant}/img_const"].transpose(0, 2, 3, 1)
  _close(img, ref, "image, psi 0.7, const noise")
  _close(img, fixture[f"{variant}/img_unfused"].transpose(0, 2, 3, 1), "image (unfused ref)")
  img = method.synthesize(g, method.broadcast(w), jax.random.key(0), "none")
  _close(img, fixture[f"{variant}/img_none"].transpose(0, 2, 3, 1), "image, no noise")
  scores, _ = method.discriminate(d, {}, fixture[f"{variant}/images"].transpose(0, 2, 3, 1),
                                  labels)
  _close(scores, fixture[f"{variant}/scores"], "D scores")


def test_default_options_differ_at_the_border(fixture):
  """Today's defaults (FIR + SAME conv) are equal inside and off on the border: the reason
  for the options."""
  values = sg2_convert.settings(_kwargs(fixture, "uncond", "G"), None)
  g = sg2_convert.convert_pickle(
      {"G": weights.PersistentObject("Generator", {
          "_init_kwargs": _kwargs(fixture, "uncond", "G"),
          "_parameters": _part(fixture, "uncond", "G")})})["ema"]
  ws = jnp.asarray(fixture["uncond/ws_trunc"])
  kw = dict(image_size=16, features=values["model.features"], conv="lax", noise_buffers=True,
            conv_clamp=256.0)
  exact = nets.SynthesisNetwork(resample="exact", **kw).apply({"params": g["synthesis"]}, ws,
                                                              "const")
  fir = nets.SynthesisNetwork(resample="fir", **kw).apply({"params": g["synthesis"]}, ws,
                                                          "const")
  ref = fixture["uncond/img_const"].transpose(0, 2, 3, 1)
  _close(exact, ref, "exact")
  assert float(np.abs(fir - ref).max()) > 0.1


def test_resampling_helpers_against_numpy():
  x = np.random.default_rng(0).normal(size=(1, 4, 4, 1)).astype(np.float32)
  full = np.asarray(nets.fir_upsample_full(jnp.asarray(x)))
  np.testing.assert_allclose(full[:, 1:-1, 1:-1], nets.fir_upsample(jnp.asarray(x)), atol=1e-6)
  # Full convolution of the zero-inserted map with the separable [1, 3, 3, 1] / 4 filter.
  up = np.zeros((7, 7))
  up[::2, ::2] = x[0, :, :, 0]
  f = np.array([1.0, 3.0, 3.0, 1.0]) / 4
  want = np.apply_along_axis(lambda r: np.convolve(r, f), 0, up)
  want = np.apply_along_axis(lambda r: np.convolve(r, f), 1, want)
  np.testing.assert_allclose(full[0, :, :, 0], want, atol=1e-6)
  blur = np.asarray(nets.blur_pad2(jnp.asarray(x)))[0, :, :, 0]
  want = np.apply_along_axis(lambda r: np.convolve(r, f / 2), 0, x[0, :, :, 0])
  want = np.apply_along_axis(lambda r: np.convolve(r, f / 2), 1, want)
  np.testing.assert_allclose(blur, want[1:-1, 1:-1], atol=1e-6)


def test_workdir_samples_the_pickle(fixture, tmp_path):
  from jgen.train import inference  # pylint: disable=import-outside-toplevel
  variant = "cond"
  path = _write(tmp_path, "net.pkl", _pickle_bytes(fixture, variant, p=0.4))
  workdir = os.path.join(tmp_path, "wd")
  result = pipeline.convert(path, workdir)
  assert result["method"] == "gan.stylegan2"
  config = _config(sg2_convert.read(path)["values"])
  config.gan.ada_p = 0.4
  method, _, state = inference.restore_for_inference(config, workdir)
  assert float(state.model_state["ada"]["p"]) == pytest.approx(0.4)
  img = method.render(state.ema_params["generator"], state.model_state["w_avg"],
                      fixture[f"{variant}/z"], fixture[f"{variant}/labels"], jax.random.key(0),
                      psi=0.7, noise_mode="const")
  _close(img, fixture[f"{variant}/img_const"].transpose(0, 2, 3, 1), "restored image")
  with pytest.raises(FileExistsError):
    pipeline.convert(path, workdir)


# ------------------------------------------------------------------ what is refused


@pytest.mark.parametrize("module,name", [("os", "system"), ("builtins", "eval"),
                                         ("subprocess", "Popen")])
def test_a_pickle_that_runs_code_is_refused(tmp_path, module, name):
  marker = os.path.join(tmp_path, "ran")
  payload = nvlabs_pickle.Call(nvlabs_pickle.ref(module, name), f"touch {marker}")
  path = _write(tmp_path, "evil.pkl", nvlabs_pickle.dumps({"G": payload}))
  with pytest.raises(pickle.UnpicklingError, match=f"{module}.{name}"):
    weights.read_nvlabs_pickle(path)
  assert not os.path.exists(marker)
  workdir = os.path.join(tmp_path, "wd")
  with pytest.raises(errors.ConversionError, match="nothing in the file was run"):
    pipeline.convert(path, workdir)
  assert convert_main([path, workdir]) == 2  # one message, no traceback
  assert not os.path.exists(workdir) and not os.path.exists(marker)


def test_persistent_source_is_never_executed(fixture, tmp_path):
  """Every network's module_src is "raise SystemExit('executed')": reading must not run it."""
  data = weights.read_nvlabs_pickle(_write(tmp_path, "n.pkl", _pickle_bytes(fixture, "cond")))
  assert data["G"].class_name == "Generator"
  assert "module_src" not in data["G"].state
  assert data["G"].init_kwargs["c_dim"] == 3
  assert data["training_set_kwargs"] == {"resolution": 16}


def _refused(tmp_path, data: bytes, error, match: str) -> None:
  path = _write(tmp_path, "bad.pkl", data)
  workdir = os.path.join(tmp_path, "wd")
  with pytest.raises(error, match=match):
    pipeline.convert(path, workdir)
  assert not os.path.exists(workdir)
  assert not [p for p in os.listdir(tmp_path) if "converting" in p]


def test_tf_era_pickle_is_refused_naming_legacy_py(tmp_path):
  net = nvlabs_pickle.Call(nvlabs_pickle.ref("dnnlib.tflib.network", "Network"))
  _refused(tmp_path, nvlabs_pickle.dumps((net, net, net)), weights.TFNetworkPickleError,
           "legacy.py")


def test_truncated_pickle_is_refused(fixture, tmp_path):
  data = _pickle_bytes(fixture, "cond")
  _refused(tmp_path, data[:len(data) // 2], errors.CheckpointError, "truncated")


def test_unknown_key_is_refused(fixture, tmp_path):
  _refused(tmp_path, _pickle_bytes(fixture, "cond", extra={"optimizer": 1}),
           errors.ConversionError, "unknown key")


@pytest.mark.parametrize("change,match", [
    ({"synthesis_kwargs": {"architecture": "resnet"}}, "architecture"),
    ({"mapping_kwargs": {"num_layers": 2, "layer_features": 5}}, "layer_features"),
    ({"new_option": 3}, "unknown constructor argument 'new_option'"),
])
def test_another_architecture_is_refused(fixture, tmp_path, change, match):
  g_kwargs = _kwargs(fixture, "cond", "G")
  for key, value in change.items():
    g_kwargs[key] = {**g_kwargs.get(key, {}), **value} if isinstance(value, dict) else value
  _refused(tmp_path, _pickle_bytes(fixture, "cond", g_kwargs=g_kwargs), errors.ConversionError,
           match)


# ------------------------------------------------------------------ the live reference


@pytest.mark.parametrize("variant", VARIANTS)
def test_live_reference(tmp_path, variant):
  """A real pickle of the reference networks (pickle.dumps of NVlabs' persistent classes, as
  its training loop writes snapshots) converts to the reference's outputs."""
  torch = pytest.importorskip("torch")
  nvlabs = os.environ.get("JGEN_NVLABS_STYLEGAN2")
  if not nvlabs or not os.path.isdir(os.path.join(nvlabs, "training")):
    pytest.skip("set JGEN_NVLABS_STYLEGAN2 to a checkout of NVlabs/stylegan2-ada-pytorch")
  spec_file = importlib.util.spec_from_file_location("stylegan2_reference", os.path.join(
      os.path.dirname(__file__), "..", "..", "benchmarks", "stylegan2_reference.py"))
  ref = importlib.util.module_from_spec(spec_file)
  spec_file.loader.exec_module(ref)
  g, d, gen = ref.networks(os.path.abspath(nvlabs), variant)
  import dnnlib  # pylint: disable=import-outside-toplevel,import-error
  spec = ref.VARIANTS[variant]
  z = torch.randn([4, spec["G"]["z_dim"]], generator=gen)
  labels = torch.arange(4) % max(spec["G"]["c_dim"], 1)
  c = (torch.nn.functional.one_hot(labels, spec["G"]["c_dim"]).float()
       if spec["G"]["c_dim"] else torch.zeros([4, 0]))
  with torch.no_grad():
    want = g(z, c, truncation_psi=0.7, noise_mode="const").numpy().transpose(0, 2, 3, 1)
  data = {"G": g, "D": d, "G_ema": g, "augment_pipe": None,
          "training_set_kwargs": dnnlib.EasyDict(resolution=spec["G"]["img_resolution"])}
  path = _write(tmp_path, "live.pkl", pickle.dumps(data))
  converted = sg2_convert.read(path)
  method = make_method(_config(converted["values"]))
  img = method.render(converted["ema"], converted["w_avg"], z.numpy(),
                      labels.numpy() if method.num_classes else None, jax.random.key(0),
                      psi=0.7, noise_mode="const")
  _close(img, want, "live image")


# ------------------------------------------------------------------ fine-tuning


@pytest.mark.slow  # ~2 min on 2 busy cores: two compiles of a StyleGAN2 step
def test_fine_tune_a_converted_pickle(tmp_path):
  """A jgen state written as an NVlabs pickle, converted, and fine-tuned through init_from with
  ADA (experiments/gan/stylegan2_transfer.py:smoke): G and D start from the pickle, and the
  stored noise maps (never trained: random noise in training) stay the pickle's."""
  import jgen.run  # pylint: disable=import-outside-toplevel
  from jgen.train.method import load_method  # pylint: disable=import-outside-toplevel
  module = experiment_module("stylegan2_transfer", beside=os.path.join(EXPERIMENTS, "x.py"))
  config = module.get_config("smoke")
  method = load_method(config)
  state = method.init(jax.random.key(3), {"image": jnp.zeros((1, 8, 8, 1))})
  state = state.replace(model_state={**state.model_state, "w_avg": jnp.full((8,), 0.5)})
  path = _write(tmp_path, "src.pkl", nvlabs_pickle.jgen_state_pickle(config, state))
  converted = os.path.join(tmp_path, "converted")
  pipeline.convert(path, converted)
  config.init_from.workdir = converted
  tuned = jgen.run.main(config, workdir=os.path.join(tmp_path, "tuned"), mode="train")
  assert int(tuned.step) == 2 and "ada" in tuned.model_state
  src = state.params["generator"]["synthesis"]["b1_conv0"]
  got = tuned.params["generator"]["synthesis"]["b1_conv0"]
  np.testing.assert_array_equal(got["noise_const"], src["noise_const"])
  assert not np.allclose(got["conv"]["kernel"], src["conv"]["kernel"])  # it trained
  assert os.path.exists(os.path.join(tmp_path, "tuned", "init_from.json"))
