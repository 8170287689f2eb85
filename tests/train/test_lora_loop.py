"""LoRA through the loop (`config.lora`, `jgen.train.adapters`): a DDPM fine-tuned from a base
run and a GAN trained with adapters in both networks. At init the adapted model is the base bit
for bit; afterwards only adapter leaves have moved, the optimizer and EMA hold adapters only,
the model the method sees is W + (alpha / r) A B computed here with NumPy, and the adapter
checkpoint holds exactly the adapters."""

import os

import jax
import numpy as np
import pytest

import jgen.run
from jgen.train import adapters as adapters_lib
from jgen.train import init_from as init_from_lib
from jgen.train import load_method
from jgen.train import sharding
from jgen.train.rules import flat
from tests.conftest import load_experiment


def _size(tree):
  return sum(int(np.prod(np.shape(x))) for x in jax.tree.leaves(tree))


@pytest.fixture(scope="module")
def base_run(ddpm_smoke_run):
  return ddpm_smoke_run


def _lora_config(base_workdir, **lora):
  config = load_experiment("ddpm/digits", "smoke")
  config.init_from.workdir = base_workdir
  config.lora.rank = lora.get("rank", 2)
  config.lora.targets = lora.get("targets", r"conv|attn.*/(q|k|v|proj_out)$")
  config.lora.alpha = lora.get("alpha", 4.0)
  config.optim.lr = 1e-2  # large enough that B moves visibly in four steps
  return config


def test_init_is_the_base_bitwise_and_only_adapters_train(tmp_path, base_run):
  config = _lora_config(base_run)
  base, _ = init_from_lib.load(init_from_lib.InitFrom(base_run))
  workdir = str(tmp_path / "lora")
  state = jgen.run.main(config, workdir=workdir)
  lora = adapters_lib.lora_from_config(config)

  stored = flat(state.params)
  adapter_paths = {p for p in stored if p.startswith("lora/")}
  assert adapter_paths and all(p.endswith(("/lora_a", "/lora_b")) for p in adapter_paths)
  # Every base leaf is the loaded base, bitwise: nothing but adapters trained.
  for p, v in flat(base).items():
    np.testing.assert_array_equal(np.asarray(stored[p]), np.asarray(v), err_msg=p)
  assert any(np.abs(np.asarray(stored[p])).max() > 0 for p in adapter_paths if
             p.endswith("lora_b"))
  # Adam moments and the EMA cover the adapters only.
  n_adapters = _size({p: stored[p] for p in adapter_paths})
  assert _size(state.opt_state) <= 2 * n_adapters + 4
  assert set(flat(state.emas["ema"])) == adapter_paths

  # The model the method sees: W + (alpha / r) A B, reshaped, from NumPy.
  seen = flat(state.ema_params)
  ema = {p: np.asarray(v) for p, v in flat(state.emas["ema"]).items()}
  assert set(seen) == set(flat(base))
  for kernel in {p.rsplit("/", 1)[0] for p in adapter_paths}:
    a, b = ema[f"{kernel}/lora_a"], ema[f"{kernel}/lora_b"]
    w = np.asarray(flat(base)[kernel[len("lora/"):]])
    want = w + (4.0 / 2) * (a.astype(np.float64) @ b).reshape(w.shape)
    np.testing.assert_allclose(np.asarray(seen[kernel[len("lora/"):]]), want, rtol=1e-5,
                               atol=1e-6)

  # The adapter checkpoint holds the adapters, nothing else, and they are the run's.
  lora_back, raw = adapters_lib.load_adapters(os.path.join(workdir, "adapters"), which="params")
  assert lora_back == lora
  assert set(flat(raw)) == adapter_paths
  for p, v in flat(raw).items():
    np.testing.assert_array_equal(np.asarray(v), np.asarray(stored[p]))
  _, ema_back = adapters_lib.load_adapters(os.path.join(workdir, "adapters"))
  for p, v in flat(ema_back).items():
    np.testing.assert_array_equal(np.asarray(v), ema[p])

  # Sampling restores the LoRA state and runs the merged model.
  paths = jgen.run.main(config, workdir=workdir, mode="sample")
  assert os.path.exists(paths["png"])


def test_fresh_lora_state_equals_base_model(base_run):
  """Before any step, the adapted model's parameters are the base's, bit for bit (B = 0)."""
  config = _lora_config(base_run, targets=".*", rank=3)
  method = load_method(config)
  batch = {"image": np.zeros((config.data.batch_size, 16, 16, 1), np.float32)}
  plain = method.init(jax.random.key(0), batch)
  state = sharding.init_fn(method, config)(jax.random.key(0), batch)
  assert state.rules[-1] == (".*", None)
  for p, v in flat(plain.params).items():
    np.testing.assert_array_equal(np.asarray(flat(state.model_params)[p]), np.asarray(v))
    np.testing.assert_array_equal(np.asarray(flat(state.ema_params)[p]), np.asarray(v))


def test_gan_adapters_in_each_network(tmp_path):
  config = load_experiment("gan/dcgan_digits", "smoke")
  config.lora.rank = 2
  config.lora.targets = "Conv"
  config.train.num_steps = 2
  config.train.checkpoint_every = 2
  method = load_method(config)
  d = config.data
  batch = {"image": np.zeros((d.batch_size, d.image_size, d.image_size, d.channels), np.float32),
           "label": np.zeros((d.batch_size,), np.int32)}
  start = sharding.init_fn(method, config)(jax.random.key(config.seed), batch)
  state = jgen.run.main(config, workdir=str(tmp_path / "gan"))
  before, after = flat(start.params), flat(state.params)
  moved = {p for p in after if not np.array_equal(np.asarray(after[p]), np.asarray(before[p]))}
  assert moved and all("/lora/" in p for p in moved)
  assert {p.split("/")[0] for p in moved} == {"generator", "discriminator"}


def test_bad_lora_settings_are_refused(base_run):
  config = _lora_config(base_run)
  config.lora.targets = ""
  with pytest.raises(ValueError, match="targets is empty"):
    adapters_lib.lora_from_config(config)
  config.lora.targets = "no_such_module"
  method = load_method(config)
  batch = {"image": np.zeros((config.data.batch_size, 16, 16, 1), np.float32)}
  with pytest.raises(ValueError, match="match no Dense or convolution kernel"):
    sharding.init_fn(method, config)(jax.random.key(0), batch)
