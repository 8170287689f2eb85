"""Face0 (`jgen.diffusion.face0`): the identity features are the classifier head's input (NumPy
check of the pooling), identity tokens follow the text tokens in the context, the drop cases
come at their rates, and a smoke run through the loop fine-tunes only the U-Net and the
projection with the identity encoder frozen."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgen.run
from jgen import errors
from jgen.diffusion import face0 as face0_lib
from jgen.nn.classifier import NoisyClassifier
from jgen.train import init_from as init_from_lib
from jgen.train import load_method
from jgen.train.rules import flat
from tests.conftest import load_experiment


def test_features_are_the_normalised_input_of_the_head():
  net = NoisyClassifier(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
                        num_classes=10, num_groups=4)
  x = jax.random.normal(jax.random.key(0), (3, 8, 8, 1))
  params = net.init(jax.random.key(1), x, jnp.zeros((3,), jnp.int32), train=False)
  head = params["params"]["head"]
  params["params"]["head"] = {"kernel": jax.random.normal(jax.random.key(2),
                                                          head["kernel"].shape),
                              "bias": jnp.ones_like(head["bias"])}
  f = face0_lib.classifier_features(net, params, x)
  np.testing.assert_allclose(np.linalg.norm(f, axis=-1), 1.0, rtol=1e-5)
  logits = net.apply(params, x, jnp.zeros((3,), jnp.int32), train=False)
  # The head is Dense(F -> 10): the logits are a linear map of the (unnormalised) features, so
  # the normalised features times their norm must reproduce them; solve for the norm.
  k = np.asarray(params["params"]["head"]["kernel"], np.float64)
  b = np.asarray(params["params"]["head"]["bias"], np.float64)
  proj = np.asarray(f, np.float64) @ k
  scale = np.sum(proj * (np.asarray(logits) - b), axis=1) / np.sum(proj * proj, axis=1)
  np.testing.assert_allclose(proj * scale[:, None] + b, logits, rtol=1e-4, atol=1e-4)


def _config(fs_run, base, clf):
  config = load_experiment("personalize/face0_digits", "smoke")
  config.init_from.workdir = fs_run
  config.init_from.base.workdir = base
  config.init_from.identity.workdir = clf
  return config


@pytest.fixture(scope="module")
def clf_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("clf"))
  config = load_experiment("ddpm/noisy_classifier_digits", "smoke")
  config.train.eval_every = 0
  jgen.run.main(config, workdir=workdir)
  return workdir


@pytest.mark.slow  # a classifier run, a Face0 run and its translations: about 3 min on 2 cores
def test_face0_trains_the_unet_and_projection_only(tmp_path, fs_run, text_base, clf_run):
  config = _config(fs_run, text_base, clf_run)
  method = load_method(config)
  text, ident = method._drops(jax.random.key(0), 200000)  # pylint: disable=protected-access
  text, ident = np.asarray(text), np.asarray(ident)
  for share, want in (((text & ~ident).mean(), 0.05), ((ident & ~text).mean(), 0.05),
                      ((text & ident).mean(), 0.05)):
    assert abs(share - want) < 5 * np.sqrt(want * (1 - want) / 200000)
  state = jgen.run.main(config, workdir=str(tmp_path / "face0"))
  base, _ = init_from_lib.load(init_from_lib.InitFrom(text_base))
  clf, _ = init_from_lib.load(init_from_lib.InitFrom(clf_run))
  for p, v in flat(clf).items():
    np.testing.assert_array_equal(np.asarray(flat(state.frozen["identity"])[p]), v, err_msg=p)
  trained = set(flat(state.emas["ema"]))
  assert any(p.startswith("id_proj/") for p in trained)
  assert any(p.startswith("unet/") for p in trained)
  assert not any(p.startswith("text_encoder/") for p in trained)
  stored = flat(state.params)
  for p, v in flat(base).items():
    if p.startswith("text_encoder/"):
      np.testing.assert_array_equal(np.asarray(stored[p]), np.asarray(v), err_msg=p)
  tokens = jnp.asarray(method.ldm.captions[:2])
  e = method.embedding(state.frozen, jnp.zeros((2, 8, 8, 1)))
  ctx = method.context(state.params, state.frozen, tokens, e)
  assert ctx.shape == (2, tokens.shape[1] + 4, method.ldm.text_encoder.context_dim)
  np.testing.assert_allclose(ctx[:, :tokens.shape[1]],
                             method.ldm.context(state.params["text_encoder"], tokens),
                             rtol=1e-6)
  paths = jgen.run.main(config, workdir=str(tmp_path / "face0"), mode="sample")
  assert paths


def test_identity_run_is_required(fs_run, text_base):
  config = _config(fs_run, text_base, "")
  with pytest.raises(ValueError, match="identity"):
    load_method(config)
  config = _config(fs_run, text_base, text_base)
  with pytest.raises(errors.ConfigError, match="noisy_classifier"):
    load_method(config)
