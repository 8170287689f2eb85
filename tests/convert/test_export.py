"""jgen models out as diffusers folders, LoRA files and embeddings (`jgen.convert.to_diffusers`,
`jgen.convert.lora_export`, `python -m jgen.export`).

Default tests (no torch): exporting a converted fixture gives back the fixture's own names and
arrays, bit for bit, and its config; re-importing an export through jgen's converters gives the
exported arrays again (equality, no tolerance: every step is a transpose or a copy).

With the reference extra, diffusers itself loads each export (``from_pretrained``,
``load_lora_weights``) and its outputs are compared to jgen's: max|diff| < 2e-5 in float32. The
two sides are different programs (XLA vs torch kernels, other summation orders in convolutions,
GroupNorm and softmax): on these tiny models they agree to about 1e-6 on outputs of order 1
(the converters' own tests measure the same), while a transposed kernel or a lost LoRA update
moves the outputs by 1e-2 or more (checked for the LoRA below).
"""

import json
import os
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jgen import export as export_lib
from jgen.convert import load, lora as lora_lib, pipeline, textual_inversion
from jgen.convert import to_diffusers as td
from jgen.convert.common import flatten_tree
from jgen.convert.files import read_state_dict
from jgen.nn.controlnet import ControlNet
from jgen.train import run_record
from jgen.train.adapters import SETTINGS, lora_from_config
from jgen.train.checkpoint import Checkpointer

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
TOL = 2e-5
MODELS = ("unet_sd15", "unet_sd21", "unet_ddpm", "vae_kl", "vq", "controlnet")
LORA_TARGETS = r"attn[12]/to_(q|k|v|out)$|proj_in$|ff_proj$|conv1$|temb_proj$"


def _export(name, module, variables):
  config = json.loads((FIXTURES / name / "config.json").read_text())
  if name.startswith("unet"):
    return td.unet_to_diffusers(module, variables, sample_size=config["sample_size"])
  if name == "controlnet":
    return td.controlnet_to_diffusers(module, variables)
  return td.autoencoder_to_diffusers(module, variables, sample_size=config.get("sample_size", 32))


def _same_trees(a, b):
  a, b = flatten_tree(a), flatten_tree(b)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


@pytest.mark.parametrize("name", MODELS)
def test_export_gives_the_fixture_back(name, tmp_path):
  folder = str(FIXTURES / name)
  module, variables = load(folder)
  config, state = _export(name, module, variables)
  source = read_state_dict(os.path.join(folder, "diffusion_pytorch_model.safetensors"))
  assert sorted(state) == sorted(source)
  for k in state:
    np.testing.assert_array_equal(state[k], np.asarray(source[k]), err_msg=k)
  original = json.loads((FIXTURES / name / "config.json").read_text())
  assert {k: v for k, v in config.items() if original.get(k, v) != v} in (
      {}, {"upcast_attention": False})  # float32: upcasting changes nothing
  out = td.save_model(str(tmp_path / name), config, state)
  again, back = load(out)
  assert again == module
  _same_trees(back, variables)


def test_attention_by_resolution_and_projection_choice():
  module, variables = load(str(FIXTURES / "unet_ddpm"))
  by_size = module.clone(attn_levels=None, attn_resolutions=(4,))
  config, _ = td.unet_to_diffusers(by_size, variables, sample_size=8)
  assert config["down_block_types"] == ["DownBlock2D", "AttnDownBlock2D"]
  sd15, _ = load(str(FIXTURES / "unet_sd15"))
  sd21, _ = load(str(FIXTURES / "unet_sd21"))
  assert not td.linear_projection_default(sd15) and td.linear_projection_default(sd21)


def test_what_diffusers_cannot_hold_is_refused():
  module, variables = load(str(FIXTURES / "unet_ddpm"))
  with pytest.raises(td.ExportError, match="num_classes"):
    td.unet_to_diffusers(module.clone(num_classes=3), variables, sample_size=8)
  control, control_vars = load(str(FIXTURES / "controlnet"))
  with pytest.raises(td.ExportError, match="hint_layout"):
    td.controlnet_to_diffusers(control.clone(hint_layout="latent"), control_vars)
  with pytest.raises(td.ExportError, match="hint_range"):
    td.controlnet_to_diffusers(control.clone(hint_range=(-1.0, 1.0)), control_vars)
  sd15, sd15_vars = load(str(FIXTURES / "unet_sd15"))
  with pytest.raises(td.ExportError, match="no diffusers name"):
    td.unet_to_diffusers(sd15, {**sd15_vars["params"], "lora": {"x": np.zeros(1)}},
                         sample_size=8)


# ------------------------------------------------------------------------ work directories


@pytest.fixture(scope="module")
def sd_run(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("sd") / "run")
  pipeline.convert(str(FIXTURES / "sd_pipeline"), path)
  return path


@pytest.fixture(scope="module")
def ddpm_run(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("ddpm") / "run")
  pipeline.convert(str(FIXTURES / "unet_ddpm"), path)
  return path


def _items(workdir, step=None):
  with Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False) as ckpt:
    return ckpt.restore(None, step=step)


def test_sd_run_exports_unet_and_vae(sd_run, tmp_path):
  items = _items(sd_run)
  unet_dir = export_lib.export(sd_run, str(tmp_path / "unet"), "unet")
  vae_dir = export_lib.export(sd_run, str(tmp_path / "vae"), "vae")
  _same_trees(load(unet_dir)[1]["params"], items["params"]["unet"])
  _same_trees(load(vae_dir)[1]["params"], items["frozen"]["autoencoder"])
  # the converted pipeline's own folders come back (the image size read from the run)
  for part, folder in (("unet", unet_dir), ("vae", vae_dir)):
    ours = json.loads(pathlib.Path(folder, "config.json").read_text())
    theirs = json.loads((FIXTURES / "sd_pipeline" / part / "config.json").read_text())
    assert {k: v for k, v in ours.items() if theirs.get(k, v) != v} in (
        {}, {"upcast_attention": False}), part


def test_ddpm_run_exports_params_and_ema(ddpm_run, tmp_path):
  items = _items(ddpm_run)
  raw = export_lib.export(ddpm_run, str(tmp_path / "raw"), "unet")
  ema = export_lib.export(ddpm_run, str(tmp_path / "ema"), "unet", source="ema")
  _same_trees(load(raw)[1]["params"], items["params"]["params"])
  _same_trees(load(ema)[1]["params"], items["emas"]["ema"]["params"])
  assert json.loads(pathlib.Path(raw, "config.json").read_text())["_class_name"] == "UNet2DModel"


def test_missing_parts_are_listed(sd_run, ddpm_run, tmp_path):
  with pytest.raises(ValueError, match=r"holds params/params, emas/ema.*frozen LDM first stage"):
    export_lib.export(ddpm_run, str(tmp_path / "x"), "vae")
  with pytest.raises(ValueError, match=r"params/unet, frozen/autoencoder.*no LoRA adapters"):
    export_lib.export(sd_run, str(tmp_path / "x"), "lora-peft")
  with pytest.raises(ValueError, match="ControlNet run"):
    export_lib.export(sd_run, str(tmp_path / "x"), "controlnet")
  with pytest.raises(ValueError, match="keeps no EMA"):
    export_lib.export(sd_run, str(tmp_path / "x"), "unet", source="ema")
  with pytest.raises(ValueError, match="no checkpoints"):
    export_lib.export(str(tmp_path), str(tmp_path / "x"), "unet")
  assert export_lib.main([sd_run, str(tmp_path / "y"), "--what=embedding"]) == 2


def test_embedding_of_a_token(sd_run, tmp_path):
  from jgen.diffusion.stable_diffusion import make_tokenizer
  tokenizer = make_tokenizer(run_record.latest_config(sd_run).text)
  token = sorted(tokenizer.encoder)[5]
  path = export_lib.export(sd_run, str(tmp_path), "embedding", token=token)
  assert path.endswith("learned_embeds.safetensors")
  table = _items(sd_run)["frozen"]["text_encoder"]["token_embedding"]["embedding"]
  got = textual_inversion.read_embedding(path)
  np.testing.assert_array_equal(got[token], np.asarray(table)[[tokenizer.encoder[token]]])


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
  """The converted SD run as a LoRA run at step 1: random adapters in params/lora (B != 0) and
  in adapters/ (raw, and an 'ema' at half the update)."""
  path = str(tmp_path_factory.mktemp("lora") / "run")
  pipeline.convert(str(FIXTURES / "sd_pipeline"), path)
  config = run_record.latest_config(path)
  config.lora.rank, config.lora.targets, config.lora.alpha = 2, LORA_TARGETS, 4.0
  lora = lora_from_config(config)
  items = _items(path)
  adapters = lora.init_adapters(jax.random.key(0), items["params"])
  leaves, tree = jax.tree_util.tree_flatten_with_path(adapters)
  rng = np.random.default_rng(0)
  adapters = jax.tree_util.tree_unflatten(tree, [
      np.asarray(rng.standard_normal(np.shape(x)) * 3.0, np.float32)
      if str(p[-1].key) == "lora_b" else np.asarray(x) for p, x in leaves])
  items["params"] = {**items["params"], "lora": adapters}
  with Checkpointer(os.path.join(path, "checkpoints"), async_save=False) as ckpt:
    ckpt.save(1, items)
  run_record.append_start(path, config, step=1)
  half = jax.tree.map(lambda x: x * 0.5 if x.ndim else x, adapters)
  with Checkpointer(os.path.join(path, "adapters"), async_save=False) as ckpt:
    ckpt.save(1, {"params": {"lora": adapters}, "ema": {"lora": half}})
  pathlib.Path(path, "adapters", SETTINGS).write_text(json.dumps(
      {"rank": lora.rank, "targets": lora.targets, "alpha": lora.alpha, "init": lora.init}))
  return path, lora, items


def _merged_unet(lora_run, scale=1.0):
  _, lora, items = lora_run
  adapters = jax.tree.map(lambda x: x * scale, items["params"]["lora"])
  return lora.view({"unet": items["params"]["unet"], "lora": adapters})["unet"]


@pytest.mark.parametrize("kind", ["peft", "kohya"])
def test_lora_run_exports_files_that_merge_as_the_run(lora_run, tmp_path, kind):
  path, _, items = lora_run
  file = export_lib.export(path, str(tmp_path / f"{kind}.safetensors"), f"lora-{kind}")
  back = lora_lib.read_lora(file)
  assert back.format == kind
  assert any(m.down.ndim == 4 and m.down.shape[2:] == (3, 3)
             for m in back.component("unet").values())  # LoCon on conv1
  merged = lora_lib.merge_lora(items["params"]["unet"], back)
  want = _merged_unet(lora_run)
  a, b = flatten_tree(merged), flatten_tree(want)
  assert max(float(np.abs(np.asarray(a[k]) - np.asarray(b[k])).max()) for k in a) < 1e-6
  ema = lora_lib.read_lora(export_lib.export(path, str(tmp_path / "ema.safetensors"),
                                             f"lora-{kind}", source="ema"))
  half = flatten_tree(lora_lib.merge_lora(items["params"]["unet"], ema))
  want_half = flatten_tree(_merged_unet(lora_run, 0.5))
  assert max(float(np.abs(np.asarray(half[k]) - np.asarray(want_half[k])).max())
             for k in half) < 1e-6


def test_lora_run_unet_export_merges_the_adapters(lora_run, tmp_path):
  path, _, _ = lora_run
  folder = export_lib.export(path, str(tmp_path / "unet"), "unet")
  _same_trees(load(folder)[1]["params"], _merged_unet(lora_run))


# ------------------------------------------------------------------------ diffusers itself


def _torch():
  torch = pytest.importorskip("torch")
  return torch, pytest.importorskip("diffusers")


def _nchw(torch, x):
  return torch.from_numpy(np.ascontiguousarray(np.transpose(np.asarray(x), (0, 3, 1, 2))))


def _close(got, want):
  got = got.detach().numpy() if hasattr(got, "detach") else np.asarray(got)
  assert np.abs(got - np.transpose(np.asarray(want), (0, 3, 1, 2))).max() < TOL


@pytest.mark.parametrize("name", ["unet_sd15", "unet_sd21", "unet_ddpm"])
def test_diffusers_loads_exported_unets(name, tmp_path):
  torch, diffusers = _torch()
  module, variables = load(str(FIXTURES / name))
  folder = td.save_model(str(tmp_path / name), *_export(name, module, variables))
  rng = np.random.default_rng(1)
  x = rng.standard_normal((2, 8, 8, module.out_ch or 4)).astype(np.float32)
  x = x[..., :3] if name == "unet_ddpm" else x
  t = np.array([3, 700], np.int32)
  if name == "unet_ddpm":
    ref = diffusers.UNet2DModel.from_pretrained(folder).eval()
    want = module.apply(variables, jnp.asarray(x), jnp.asarray(t), train=False)
    with torch.no_grad():
      got = ref(_nchw(torch, x), torch.from_numpy(t)).sample
  else:
    ctx = rng.standard_normal((2, 5, module.context_dim)).astype(np.float32)
    ref = diffusers.UNet2DConditionModel.from_pretrained(folder).eval()
    want = module.apply(variables, jnp.asarray(x), jnp.asarray(t), {"context": ctx}, train=False)
    with torch.no_grad():
      got = ref(_nchw(torch, x), torch.from_numpy(t), encoder_hidden_states=torch.from_numpy(ctx)
                ).sample
  _close(got, want)


def test_diffusers_loads_exported_vae(sd_run, tmp_path):
  torch, diffusers = _torch()
  folder = export_lib.export(sd_run, str(tmp_path / "vae"), "vae")
  module, variables = load(folder)
  ref = diffusers.AutoencoderKL.from_pretrained(folder).eval()
  images = np.random.default_rng(2).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
  z = module.apply(variables, jnp.asarray(images), method=module.encode)
  with torch.no_grad():
    mean = ref.encode(_nchw(torch, images)).latent_dist.mean
    decoded = ref.decode(_nchw(torch, z)).sample
  _close(mean, z)
  _close(decoded, module.apply(variables, z, method=module.decode))


def test_diffusers_loads_exported_controlnet(tmp_path):
  torch, diffusers = _torch()
  module, variables = load(str(FIXTURES / "controlnet"))
  folder = td.save_model(str(tmp_path / "cn"), *td.controlnet_to_diffusers(module, variables))
  ref = diffusers.ControlNetModel.from_pretrained(folder).eval()
  rng = np.random.default_rng(3)
  x = rng.standard_normal((1, 8, 8, 4)).astype(np.float32)
  size = 8 * module.hint_factor
  hint = rng.uniform(-1, 1, (1, size, size, ref.config.conditioning_channels)).astype(np.float32)
  ctx = rng.standard_normal((1, 3, module.unet.context_dim)).astype(np.float32)
  t = np.array([500], np.int32)
  want = module.apply(variables, jnp.asarray(x), jnp.asarray(t), {"context": ctx},
                      jnp.asarray(hint), train=False)
  with torch.no_grad():
    down, mid = ref(_nchw(torch, x), torch.from_numpy(t), encoder_hidden_states=torch.from_numpy(
        ctx), controlnet_cond=_nchw(torch, (hint + 1) / 2), return_dict=False)
  assert len(want) == len(down) + 1
  for g, w in zip([*down, mid], want):
    _close(g, w)
  assert isinstance(module, ControlNet)


def test_pipeline_loads_exported_lora_files(lora_run, tmp_path):
  """A diffusers pipeline of the same tiny model (the sd_pipeline fixture) with
  ``load_lora_weights`` of jgen's peft and kohya files computes the run's merged U-Net."""
  torch, diffusers = _torch()
  pytest.importorskip("peft")
  path, _, items = lora_run
  unet, _ = load(str(FIXTURES / "sd_pipeline" / "unet"))
  rng = np.random.default_rng(4)
  x = rng.standard_normal((1, 4, 4, 4)).astype(np.float32)
  ctx = rng.standard_normal((1, 7, unet.context_dim)).astype(np.float32)
  t = np.array([250], np.int32)
  want = unet.apply({"params": _merged_unet(lora_run)}, x, t, {"context": ctx}, train=False)
  base = unet.apply({"params": items["params"]["unet"]}, x, t, {"context": ctx}, train=False)
  assert np.abs(np.asarray(want) - np.asarray(base)).max() > 1e-2  # the LoRA matters
  for kind in ("peft", "kohya"):
    file = export_lib.export(path, str(tmp_path / f"{kind}.safetensors"), f"lora-{kind}")
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(str(FIXTURES / "sd_pipeline"))
    pipe.load_lora_weights(file)
    with torch.no_grad():
      got = pipe.unet(_nchw(torch, x), torch.from_numpy(t),
                      encoder_hidden_states=torch.from_numpy(ctx)).sample
    _close(got, want)


def test_cli_writes_a_folder(sd_run, tmp_path):
  out = str(tmp_path / "cli_unet")
  assert export_lib.main([sd_run, out, "--what=unet"]) == 0
  assert sorted(os.listdir(out)) == ["config.json", td.WEIGHTS]
  assert export_lib.main([sd_run, out, "--what=unet"]) == 2  # never overwrites
  shutil.rmtree(out)
