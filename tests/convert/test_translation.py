"""pix2pix / CycleGAN reference checkpoints (`jgen.convert.translation`, `translation_pipeline`)
against the reference networks' outputs.

Fixture: `benchmarks/translation_reference.py --write tests/convert/fixtures/translation.npz`:
tiny random reference networks (pix2pix U-Net with batch norm and dropout blocks, U-Net with
instance norm and PyTorch 0.4's InstanceNorm running statistics in its state dict, CycleGAN
ResNet generators with both norms, PatchGANs with both norms), their state dicts, NCHW inputs
and outputs. Tolerance: 1e-5 absolute on outputs of size O(1) (tanh images, patch logits):
the conversion is exact (the same float32 weights, rearranged) and the two frameworks' float32
convolutions differ by summation order; the measured worst case is 1.6e-6 (the ResNet
generator; `python benchmarks/translation_reference.py` prints every case).
"""

import collections
import dataclasses
import os
import pickle
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgen.run
from jgen.convert import translation as tr
from jgen.convert import translation_pipeline as tp
from jgen.convert.__main__ import main as convert_main
from jgen.convert.common import ConversionError, flatten_tree
from jgen.nn.translation import unet_dropout_levels
from jgen.train import run_record
from jgen.train.checkpoint import Checkpointer
from jgen.train.inference import restore_for_inference
from jgen.train.method import load_method
from tests.conftest import load_experiment
from tests.metrics.test_weights import write_torch_file

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "translation.npz")
TOL = 1e-5
KEY0 = jax.random.key(0)
# case -> (kind, depth, norm, width, in, out), as benchmarks/translation_reference.py built it
CASES = {"unet_batch": ("unet", 6, "batch", 4, 3, 2),
         "unet_instance": ("unet", 5, "instance", 4, 3, 3),
         "resnet_instance": ("resnet", 2, "instance", 4, 3, 3),
         "resnet_batch": ("resnet", 1, "batch", 4, 1, 2),
         "patch_batch": ("patch", 3, "batch", 4, 5, 1),
         "patch_instance": ("patch", 2, "instance", 4, 3, 1)}


@pytest.fixture(scope="module")
def ref():
  return np.load(FIXTURE)


def state_of(ref, case: str) -> dict[str, np.ndarray]:
  prefix = f"{case}/sd/"
  return {k[len(prefix):]: np.asarray(ref[k]) for k in ref.files if k.startswith(prefix)}


def run_nchw(module, variables, x_nchw, *, train=False):
  """The module on an NCHW input, as NCHW (patch logits [B, h, w] -> [B, 1, h, w])."""
  x = jnp.asarray(np.transpose(x_nchw, (0, 2, 3, 1)))
  y = module.apply(variables, x, train=train, rngs={"dropout": jax.random.key(0)},
                   mutable=["batch_stats"] if train else False)
  y = np.asarray(y[0] if train else y)
  return y[:, None] if y.ndim == 3 else np.transpose(y, (0, 3, 1, 2))


# ---------------------------------------------------------------------- parity


@pytest.mark.parametrize("case", sorted(CASES))
def test_converted_networks_equal_the_reference(ref, case):
  state = state_of(ref, case)
  arch = tr.arch_from_state(state, dropout=0.0)
  kind, depth, norm, width, c_in, c_out = CASES[case]
  assert (arch.kind, arch.depth, arch.norm, arch.width, arch.in_channels,
          arch.out_channels) == (kind, depth, norm, width, c_in, c_out)
  module, variables = tr.convert_state_dict(state, arch)
  y = run_nchw(module, variables, ref[f"{case}/x"])
  assert y.shape == ref[f"{case}/y"].shape
  assert np.abs(y - ref[f"{case}/y"]).max() < TOL
  if f"{case}/y_train" in ref.files:  # batch statistics: the reference's test-time default
    y = run_nchw(module, variables, ref[f"{case}/x"], train=True)
    assert np.abs(y - ref[f"{case}/y_train"]).max() < TOL


def test_jgen_defaults_differ_where_the_reference_does(ref):
  """The reference settings matter: reflection-padded strided convs (jgen's default) change the
  ResNet's output; the U-Net's default dropout sits at other levels than the reference's."""
  state = state_of(ref, "resnet_instance")
  module, variables = tr.convert_state_dict(state, tr.arch_from_state(state))
  y = run_nchw(module.clone(down_padding="reflect"), variables, ref["resnet_instance/x"])
  assert np.abs(y - ref["resnet_instance/y"]).max() > 0.1
  levels = tuple(int(i) for i in ref["unet_batch/dropout_levels"])
  assert levels == unet_dropout_levels(6, "reference") == (4,)
  assert unet_dropout_levels(6) != levels
  assert unet_dropout_levels(8, "reference") == (6, 5, 4)
  assert ref["unet_instance/dropout_levels"].size == 0 == len(unet_dropout_levels(5, "reference"))


def test_round_trip_to_the_reference_layout(ref):
  for case in CASES:
    state = state_of(ref, case)
    arch = tr.arch_from_state(state)
    _, variables = tr.convert_state_dict(state, arch)
    back = tr.to_reference(variables, arch)
    legacy = {k for k in state if k.endswith(tr._STATS) and arch.norm == "instance"}
    assert set(back) == set(state) - legacy, case
    for k, v in back.items():
      if not k.endswith("num_batches_tracked"):
        np.testing.assert_array_equal(v, state[k], err_msg=f"{case} {k}")


def test_old_instance_norm_statistics_are_dropped_only_at_norms(ref):
  state = state_of(ref, "unet_instance")
  assert "model.model.1.model.2.running_mean" in state  # as PyTorch 0.4 saved them
  arch = tr.arch_from_state(state)
  tr.convert_state_dict(state, arch)
  with pytest.raises(ConversionError, match="model.model.1.model.1.running_mean"):
    tr.convert_state_dict({**state, "model.model.1.model.1.running_mean": np.zeros(8)}, arch)


# ---------------------------------------------------------------------- bad input


def test_flags_that_contradict_the_file(ref):
  arch = tr.arch_from_state(state_of(ref, "unet_batch"))
  arch.check(arch=None, norm="batch", width=4)
  for flags, match in ((dict(arch="unet_256"), "unet of depth 8"),
                       (dict(arch="resnet_9blocks"), "resnet"),
                       (dict(norm="instance"), "--norm=instance"),
                       (dict(width=64), "--ngf/--ndf=64"),
                       (dict(in_channels=1), "--input_nc=1")):
    with pytest.raises(tr.ArchError, match=match):
      arch.check(**flags)
  with pytest.raises(tr.ArchError, match="unknown --arch"):
    arch.check(arch="unet_512")
  # a flag that names the wrong norm, through the converter: every mismatched name listed
  wrong = dataclasses.replace(arch, norm="instance")
  with pytest.raises(ConversionError, match="check --norm"):
    tr.convert_state_dict(state_of(ref, "unet_batch"), wrong)


def test_unknown_and_missing_keys_are_listed(ref):
  state = state_of(ref, "patch_instance")
  arch = tr.arch_from_state(state)
  with pytest.raises(ConversionError, match="unexpected: model.9.weight") as e:
    tr.convert_state_dict({**state, "model.9.weight": np.zeros((1, 1, 4, 4))}, arch)
  assert "1 unexpected" in str(e.value)
  del state["model.2.bias"]
  with pytest.raises(ConversionError, match="missing: model.2.bias"):
    tr.convert_state_dict(state, arch)
  with pytest.raises(tr.ArchError, match="not those of the reference"):
    tr.arch_from_state({"encoder.weight": np.zeros((4, 3, 3, 3))})
  with pytest.raises(tr.ArchError, match="DataParallel"):
    tr.arch_from_state({"module.model.0.weight": np.zeros((4, 3, 3, 3))})


def _torch_zip(path, payload: bytes) -> None:
  """A torch-zip-layout file whose data.pkl is `payload`."""
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("archive/data.pkl", payload)
    z.writestr("archive/version", "3\n")


class _RunsCode:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.makedirs, (self.marker,))


def test_a_pth_that_would_run_code_is_refused_unrun(tmp_path):
  marker = str(tmp_path / "ran")
  path = str(tmp_path / "latest_net_G.pth")
  _torch_zip(path, pickle.dumps(collections.OrderedDict(w=_RunsCode(marker))))
  workdir = str(tmp_path / "run")
  with pytest.raises(tr.UnreadableFileError, match="refused, nothing in it was run"):
    tp.convert_translation(path, workdir)
  assert not os.path.exists(marker) and not os.path.exists(workdir)
  assert convert_main([path, workdir]) != 0
  assert not os.path.exists(marker) and not os.path.exists(workdir)


def test_truncated_and_foreign_files(tmp_path):
  path = str(tmp_path / "cut.pth")
  _torch_zip(path, pickle.dumps({"a": 1}))
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[: len(data) // 2])
  workdir = str(tmp_path / "run")
  with pytest.raises(tr.UnreadableFileError, match="truncated"):
    tp.convert_translation(path, workdir)
  assert not os.path.exists(workdir)
  with pytest.raises(FileNotFoundError):
    tp.convert_translation(str(tmp_path / "none.pth"), workdir)
  with pytest.raises(tr.ArchError, match="latest_net_G.pth"):
    tp.convert_translation(str(tmp_path), workdir)  # a folder without the reference's files


def test_a_discriminator_alone_or_a_flag_contradiction_writes_nothing(ref, tmp_path):
  workdir = str(tmp_path / "run")
  with pytest.raises(tr.ArchError, match="holds a discriminator"):
    tp.convert_state_dicts({"file": (state_of(ref, "patch_batch"), "D.pth")}, workdir)
  with pytest.raises(tr.ArchError, match="unet_256"):
    tp.convert_state_dicts({"file": (state_of(ref, "unet_batch"), "G.pth")}, workdir,
                           arch="unet_256")
  with pytest.raises(tr.ArchError, match="needs a multiple of 64"):
    tp.convert_state_dicts({"file": (state_of(ref, "unet_batch"), "G.pth")}, workdir,
                           image_size=96)
  with pytest.raises(tr.ArchError, match="discriminator reads 3 channels"):
    tp.convert_state_dicts({"G": (state_of(ref, "unet_batch"), "G.pth"),
                            "D": (state_of(ref, "patch_instance"), "D.pth")}, workdir)
  assert not os.path.exists(workdir)


# ---------------------------------------------------------------------- work directories


def saved(workdir):
  """The items of a work directory's step-0 checkpoint."""
  with Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False) as ckpt:
    return ckpt.restore(None)


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_pix2pix_files_become_a_work_directory(ref, tmp_path, layout, capsys):
  """A pix2pix checkpoint folder (latest_net_G.pth, latest_net_D.pth, written in torch's file
  layouts by the torch-free test writer) through the command line."""
  folder = tmp_path / "facades"
  folder.mkdir()
  for name, case in (("G", "unet_batch"), ("D", "patch_batch")):
    write_torch_file(collections.OrderedDict(state_of(ref, case)),
                     str(folder / f"latest_net_{name}.pth"), layout)
  workdir = str(tmp_path / "run")
  assert convert_main([str(folder), workdir, "--no_dropout", "--image_size", "64",
                       "--arch", "basic", "--norm", "batch"]) == 0
  assert "gan.pix2pix" in capsys.readouterr().out
  config = run_record.latest_config(workdir)
  assert (config.model.num_downs, config.model.dropout_placement, config.model.edge_bias,
          config.gan.test_batch_stats) == (6, "reference", False, True)
  method, items = load_method(config), saved(workdir)
  variables = {"params": items["params"]["generator"], **items["model_state"]["generator"]}
  y = run_nchw(method.generator, variables, ref["unet_batch/x"])
  assert np.abs(y - ref["unet_batch/y"]).max() < TOL
  d_vars = {"params": items["params"]["discriminator"],
            **items["model_state"]["discriminator"]}
  logits = run_nchw(method.discriminator, d_vars, ref["patch_batch/x"])
  assert np.abs(logits - ref["patch_batch/y"]).max() < TOL
  with pytest.raises(FileExistsError):
    tp.convert_translation(str(folder), workdir)


def _digits_workdir(tmp_path):
  """A 1 -> 1 channel U-Net (random jgen weights written in the reference layout) converted
  into a work directory, its config pointed at 32 x 32 digits' edge maps."""
  arch = tr.Arch("unet", 5, "batch", 4, 1, 1, dropout=0.5)
  module, _ = tr.module_of(arch)
  variables = module.init({"params": jax.random.key(3), "dropout": jax.random.key(4)},
                          jnp.zeros((1, 32, 32, 1)), train=False)
  workdir = str(tmp_path / "run")
  result = tp.convert_state_dicts({"file": (tr.to_reference(variables, arch), "G.pth")},
                                  workdir, image_size=32)
  assert result["initialized"] == ["discriminator"]
  config = run_record.latest_config(workdir)
  config.data.source = "derived:edges:digits"
  config.data.eval_split = "test"
  config.sample.num = config.sample.batch_size = config.data.batch_size = 4
  config.train.eval_batches = 1
  return workdir, config, variables


def test_converted_pix2pix_samples_through_the_loop(tmp_path):
  workdir, config, variables = _digits_workdir(tmp_path)
  data = np.load(jgen.run.main(config, workdir=workdir, mode="sample")["npz"])
  assert data["images"].shape == (4, 1, 32, 32, 1)
  restored = restore_for_inference(config, workdir)[2]
  got = flatten_tree(restored.params["generator"])
  for k, v in flatten_tree(variables["params"]).items():
    np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(v), err_msg=k)


# ---------------------------------------------------------------------- with torch: real files


def test_real_pth_files_through_the_command_line(ref, tmp_path, capsys):
  torch = pytest.importorskip("torch")

  def save(case, path):
    torch.save(collections.OrderedDict((k, torch.from_numpy(np.array(v)))
                                       for k, v in state_of(ref, case).items()), path)

  folder = tmp_path / "checkpoints" / "h2z"
  folder.mkdir(parents=True)
  for name, case in (("G_A", "resnet_instance"), ("G_B", "resnet_instance"),
                     ("D_A", "patch_instance"), ("D_B", "patch_instance")):
    save(case, str(folder / f"latest_net_{name}.pth"))
  workdir = str(tmp_path / "h2z")
  assert convert_main([str(folder), workdir, "--image_size", "16", "--norm", "instance"]) == 0
  assert "gan.cyclegan" in capsys.readouterr().out
  method, params = load_method(run_record.latest_config(workdir)), saved(workdir)["params"]
  x = ref["resnet_instance/x"]
  for name in ("g_ab", "g_ba"):
    y = run_nchw(method.g_ab, {"params": params[name]}, x)
    assert np.abs(y - ref["resnet_instance/y"]).max() < TOL
  logits = run_nchw(method.d_a, {"params": params["d_b"]}, ref["patch_instance/x"])
  assert np.abs(logits - ref["patch_instance/y"]).max() < TOL

  single = str(tmp_path / "facades_label2photo.pth")
  save("unet_instance", single)  # with InstanceNorm running statistics, as old files
  assert convert_main([single, str(tmp_path / "bad"), "--arch", "unet_256"]) != 0
  assert not os.path.exists(tmp_path / "bad")
  assert convert_main([single, str(tmp_path / "p2p"), "--norm", "instance"]) == 0
  method = load_method(run_record.latest_config(str(tmp_path / "p2p")))
  module = method.generator.clone(dropout=0.0)
  params = saved(str(tmp_path / "p2p"))["params"]
  y = run_nchw(module, {"params": params["generator"]}, ref["unet_instance/x"])
  assert np.abs(y - ref["unet_instance/y"]).max() < TOL


@pytest.mark.slow  # trains 3 steps of pix2pix (about 40 s on 2 shared cores)
def test_transfer_config_fine_tunes_a_converted_checkpoint(tmp_path):
  """experiments/translation/pix2pix_transfer.py:init_from=WORKDIR starts from a converted
  G and D: after 3 Adam steps of lr 2e-4 (each moves a leaf by about lr; b1 = 0.5 lets a step
  exceed it a little) every leaf is within 5e-3 of the converted one, while a fresh
  initialization is O(0.1) away."""
  c = load_experiment("translation/pix2pix_transfer", "smoke")
  arches = {"G": tr.Arch("unet", c.model.num_downs, "instance", c.model.ngf, 1, 1, 0.5),
            "D": tr.Arch("patch", c.model.n_layers, "instance", c.model.ndf, 2, 1)}
  states, converted = {}, {}
  for i, (name, arch) in enumerate(arches.items()):
    module, _ = tr.module_of(arch)
    x = jnp.zeros(arch.example_shape()[:3] + (arch.in_channels,))
    variables = module.init({"params": jax.random.key(i), "dropout": KEY0}, x, train=False)
    converted[name] = variables["params"]
    states[name] = (tr.to_reference(variables, arch), f"{name}.pth")
  source = str(tmp_path / "converted")
  tp.convert_state_dicts(states, source, image_size=32)
  run = str(tmp_path / "run")
  c = load_experiment("translation/pix2pix_transfer", f"smoke,init_from={source}")
  state = jgen.run.main(c, workdir=run, mode="train")
  assert os.path.exists(os.path.join(run, "init_from.json"))
  for name, net in (("G", "generator"), ("D", "discriminator")):
    got, want = flatten_tree(state.params[net]), flatten_tree(converted[name])
    assert sorted(got) == sorted(want)
    for k in want:
      assert np.abs(np.asarray(got[k]) - np.asarray(want[k])).max() < 5e-3, k
