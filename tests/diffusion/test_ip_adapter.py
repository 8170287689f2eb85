"""IP-Adapter (`diffusion.ip_adapter`): decoupled cross-attention against NumPy, the three
dropout cases at their rates, and a smoke run on a text latent diffusion run in which only the
image projection and the K_ip / V_ip layers change."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgen.run
from jgen.nn.layers import CrossAttnBlock
from jgen.train import init_from as init_from_lib
from jgen.train import load_method
from jgen.train.rules import flat
from tests.conftest import load_experiment


def _np_attend(q, k, v, heads):
  b, i, c = q.shape
  d = c // heads
  q, k, v = (a.reshape(b, a.shape[1], heads, d) for a in (q, k, v))
  logits = np.einsum("bihd,bjhd->bhij", q, k) / np.sqrt(d)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  return np.einsum("bhij,bjhd->bihd", w, v).reshape(b, i, c)


def test_decoupled_cross_attention_against_numpy():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 4, 4, 8)).astype(np.float32)
  text = rng.standard_normal((2, 5, 6)).astype(np.float32)
  image = rng.standard_normal((2, 3, 6)).astype(np.float32)
  block = CrossAttnBlock(num_groups=2, num_heads=2)
  params = block.init(jax.random.key(0), x, text, image, 0.7)
  params = jax.tree.map(lambda v: jnp.asarray(rng.standard_normal(v.shape) * 0.3, v.dtype),
                        params)
  got = np.asarray(block.apply(params, x, text, image, 0.7))
  f = {k: np.asarray(v, np.float64) for k, v in flat(params["params"]).items()}
  p = {k: {"kernel": f.get(f"{k}/kernel"), "bias": f[f"{k}/bias"]}
       for k in ("q", "k", "v", "k_ip", "v_ip", "proj_out")}
  p["norm"] = {"scale": f["norm/norm/scale"], "bias": f["norm/norm/bias"]}
  xs = x.astype(np.float64).reshape(2, 16, 2, 4)  # group norm over (H W, C / G)
  mean = xs.mean(axis=(1, 3), keepdims=True)
  var = xs.var(axis=(1, 3), keepdims=True)
  h = ((xs - mean) / np.sqrt(var + 1e-6)).reshape(2, 16, 8) * p["norm"]["scale"] + p["norm"]["bias"]
  dense = lambda a, name: a @ p[name]["kernel"] + p[name]["bias"]
  q = dense(h, "q")
  out = _np_attend(q, dense(text, "k"), dense(text, "v"), 2)
  out = out + 0.7 * _np_attend(q, dense(image, "k_ip"), dense(image, "v_ip"), 2)
  want = x.reshape(2, 16, 8) + dense(out, "proj_out")
  np.testing.assert_allclose(got.reshape(2, 16, 8), want, rtol=2e-4, atol=2e-4)


def _config(fs_run, base):
  config = load_experiment("personalize/ip_adapter_digits", "smoke")
  config.init_from.workdir = fs_run
  config.init_from.base.workdir = base
  return config


def test_drop_cases_at_their_rates(fs_run, text_base):
  method = load_method(_config(fs_run, text_base))
  text, image = method._drops(jax.random.key(0), 200000)  # pylint: disable=protected-access
  text, image = np.asarray(text), np.asarray(image)
  for share, want in (((text & ~image).mean(), 0.05), ((image & ~text).mean(), 0.05),
                      ((text & image).mean(), 0.05), ((~text & ~image).mean(), 0.85)):
    assert abs(share - want) < 5 * np.sqrt(want * (1 - want) / 200000)


@pytest.mark.slow  # a loop run and a translation grid: about 1.5 min on 2 cores
def test_only_the_adapter_trains(tmp_path, fs_run, text_base):
  config = _config(fs_run, text_base)
  base, _ = init_from_lib.load(init_from_lib.InitFrom(text_base))
  state = jgen.run.main(config, workdir=str(tmp_path / "ip"))
  stored = flat(state.params)
  for p, v in flat(base).items():
    np.testing.assert_array_equal(np.asarray(stored[p]), np.asarray(v), err_msg=p)
  trained = set(flat(state.emas["ema"]))
  assert trained == set(stored) - set(flat(base))
  assert any("/k_ip/" in p for p in trained) and any(p.startswith("ip_proj/") for p in trained)
  recorded, _ = init_from_lib.load(init_from_lib.InitFrom(text_base, source="model_state"))
  assert float(state.model_state["scale_factor"]) == float(recorded["scale_factor"])
  paths = jgen.run.main(config, workdir=str(tmp_path / "ip"), mode="sample")
  assert paths


def test_rules_and_base_are_required(fs_run, text_base):
  config = _config(fs_run, text_base)
  config.optim.rules = ()
  with pytest.raises(ValueError, match="image projection"):
    load_method(config)
  config = _config(fs_run, "")
  with pytest.raises(ValueError, match="init_from.base.workdir"):
    load_method(config)
