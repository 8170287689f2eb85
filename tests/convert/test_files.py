"""Weight files read without running anything (`jgen.convert.files`).

Every file is written here without torch: torch's zip and legacy pickles by the opcode writer of
tests/metrics/test_weights.py (an independent writer of ``torch.save``'s layouts), safetensors by
``safetensors.numpy.save_file`` or, for BF16 and broken headers, by hand. The malicious pickles
name ``os.system`` (directly, through ``posix``, and with protocol 4's ``STACK_GLOBAL``) or a
class of a module whose import has a side effect; each is refused with
``pickle.UnpicklingError`` and the marker file it would have written is never created.
"""

import collections
import json
import os
import pickle
import struct
import sys
import zipfile

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from jgen.convert import files
from jgen.metrics import weights
from tests.metrics.test_weights import View, write_torch_file


class _System:
  """Pickles as ``os.system(command)`` (what a malicious checkpoint runs on ``torch.load``)."""

  def __init__(self, command):
    self.command = command

  def __reduce__(self):
    return os.system, (self.command,)


def _global_call(module, name, arg):
  """Protocol-2 opcodes of ``module.name(arg)`` (a GLOBAL that pickle.dumps cannot name)."""
  raw = arg.encode()
  return (pickle.GLOBAL + f"{module}\n{name}\n".encode() + pickle.MARK + pickle.BINUNICODE
          + struct.pack("<I", len(raw)) + raw + pickle.TUPLE + pickle.REDUCE)


def _zip(path, data_pkl, storages=()):
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("archive/data.pkl", data_pkl)
    for key, raw in storages:
      archive.writestr(f"archive/data/{key}", raw)
    archive.writestr("archive/version", "3\n")
    archive.writestr("archive/byteorder", "little")
  return str(path)


def _legacy(path, *pickles):
  with open(path, "wb") as f:
    for p in pickles:
      f.write(p)
  return str(path)


def _header():
  return (pickle.dumps(weights.LEGACY_MAGIC, protocol=2), pickle.dumps(1001, protocol=2),
          pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2))


def _evil_files(tmp_path, marker):
  """name -> path of files whose unpickling would create `marker`."""
  command = f"touch {marker}"
  in_dict = pickle.dumps(collections.OrderedDict(w=_System(command)), protocol=2)
  stack_global = pickle.dumps({"w": _System(command)}, protocol=4)
  via_posix = (pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + pickle.MARK + pickle.BINUNICODE
               + struct.pack("<I", 1) + b"w" + _global_call("posix", "system", command)
               + pickle.SETITEMS + pickle.STOP)
  storage = np.arange(4, dtype=np.float32).tobytes()
  return {
      "zip_bin": _zip(tmp_path / "pytorch_model.bin", in_dict),
      "zip_ckpt_protocol4": _zip(tmp_path / "model.ckpt", stack_global),
      "zip_posix_with_storage": _zip(tmp_path / "posix.pt", via_posix, [("0", storage)]),
      "plain_pickle": _legacy(tmp_path / "plain.pth", in_dict),
      "legacy_body": _legacy(tmp_path / "legacy.bin", *_header(), in_dict,
                             pickle.dumps([], protocol=2)),
      "legacy_header": _legacy(tmp_path / "header.ckpt", in_dict),
  }


@pytest.mark.parametrize("name", ["zip_bin", "zip_ckpt_protocol4", "zip_posix_with_storage",
                                  "plain_pickle", "legacy_body", "legacy_header"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, name):
  marker = tmp_path / "pwned"
  path = _evil_files(tmp_path, marker)[name]
  with pytest.raises(pickle.UnpicklingError, match="not allowed"):
    files.read_state_dict(path)
  assert not marker.exists()


def test_class_of_an_unknown_module_is_refused_before_import(tmp_path, monkeypatch):
  marker = tmp_path / "imported"
  (tmp_path / "evil_payload.py").write_text(
      f"open({str(marker)!r}, 'w').close()\n\nclass Evil:\n  pass\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  data = (pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + pickle.MARK + pickle.BINUNICODE
          + struct.pack("<I", 1) + b"w" + pickle.GLOBAL + b"evil_payload\nEvil\n"
          + pickle.EMPTY_TUPLE + pickle.REDUCE + pickle.SETITEMS + pickle.STOP)
  with pytest.raises(pickle.UnpicklingError, match="evil_payload.Evil is not allowed"):
    files.read_state_dict(_zip(tmp_path / "evil.bin", data))
  assert not marker.exists() and "evil_payload" not in sys.modules


def _torch_state():
  rng = np.random.default_rng(0)
  shared = rng.normal(size=12).astype(np.float32)
  state = collections.OrderedDict(
      conv=rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
      half=rng.normal(size=(5,)).astype(np.float16),
      bf16=rng.normal(size=(2, 3)).astype(ml_dtypes.bfloat16),
      transposed=View("s", shared, 0, (3, 4), (1, 3)),  # .t() of a [4, 3] tensor
      sliced=View("s", shared, 2, (2, 2), (3, 1)))
  nested = collections.OrderedDict(block=collections.OrderedDict(weight=state["conv"]))
  state["net"] = nested
  expected = {"conv": state["conv"], "half": state["half"], "bf16": state["bf16"],
              "transposed": state["transposed"].value(), "sliced": state["sliced"].value(),
              "net.block.weight": state["conv"]}
  return state, expected


@pytest.mark.parametrize("layout,name", [("zip", "pytorch_model.bin"),
                                         ("legacy", "weights.pt"), ("zip", "model.pth")])
def test_torch_state_dict_reads_to_the_right_arrays(tmp_path, layout, name):
  state, expected = _torch_state()
  got = files.read_state_dict(write_torch_file(state, str(tmp_path / name), layout))
  assert sorted(got) == sorted(expected)
  for key, value in expected.items():
    assert got[key].dtype == value.dtype, key
    np.testing.assert_array_equal(got[key], value, err_msg=key)


def test_lightning_ckpt_is_unwrapped(tmp_path):
  state, expected = _torch_state()
  path = write_torch_file({"state_dict": state, "global_step": 7, "epoch": 1},
                          str(tmp_path / "last.ckpt"))
  got = files.read_state_dict(path)
  assert sorted(got) == sorted(expected)
  np.testing.assert_array_equal(got["transposed"], expected["transposed"])


def _write_safetensors(path, tensors, metadata=None, dtype_names=None):
  """A safetensors file written by hand: `tensors` name -> array, dtype names as given."""
  header, blobs, offset = {}, [], 0
  for name, x in tensors.items():
    raw = np.ascontiguousarray(x).tobytes()
    header[name] = {"dtype": (dtype_names or {}).get(name, "F32"), "shape": list(x.shape),
                    "data_offsets": [offset, offset + len(raw)]}
    blobs.append(raw)
    offset += len(raw)
  if metadata:
    header["__metadata__"] = metadata
  text = json.dumps(header).encode()
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
  return str(path)


def test_safetensors_dtypes_and_memory_mapped_views(tmp_path):
  rng = np.random.default_rng(1)
  want = {"a.weight": rng.normal(size=(3, 4)).astype(np.float32),
          "a.bias": rng.normal(size=(4,)).astype(np.float16),
          "ids": np.arange(6, dtype=np.int64).reshape(2, 3)}
  path = str(tmp_path / "x.safetensors")
  save_file(want, path, metadata={"format": "pt"})
  f = files.read_state_dict(path)
  assert isinstance(f, files.SafetensorsFile) and sorted(f) == sorted(want) and len(f) == 3
  assert f.shape("a.weight") == (3, 4) and files.safetensors_metadata(path) == {"format": "pt"}
  for name, value in want.items():
    got = f[name]
    assert got.dtype == value.dtype and got.shape == value.shape, name
    np.testing.assert_array_equal(got, value, err_msg=name)
    assert not got.flags.writeable and not got.flags.owndata  # a view on the map, read-only
    base = got
    while base is not None and not isinstance(base, np.memmap):
      base = base.base
    assert isinstance(base, np.memmap), name
  bf16 = rng.normal(size=(2, 5)).astype(ml_dtypes.bfloat16)
  path = _write_safetensors(tmp_path / "bf.safetensors", {"w": bf16}, dtype_names={"w": "BF16"})
  got = files.read_state_dict(path)["w"]
  assert got.dtype == np.dtype(ml_dtypes.bfloat16)
  np.testing.assert_array_equal(got.astype(np.float32), bf16.astype(np.float32))


def test_empty_safetensors_file(tmp_path):
  path = _write_safetensors(tmp_path / "empty.safetensors", {}, metadata={"k": "v"})
  f = files.SafetensorsFile(path)
  assert len(f) == 0 and f.metadata == {"k": "v"}


def test_bad_safetensors_headers_raise_value_errors(tmp_path):
  good = np.ones((2, 2), np.float32)
  cases = {
      "short": (b"\x01\x02", "shorter than its 8-byte header"),
      "huge": (struct.pack("<Q", 10**6) + b"{}", "header size 1000000"),
      "json": (struct.pack("<Q", 5) + b"{nope", "header is not JSON"),
      "utf8": (struct.pack("<Q", 2) + b"\xff\xfe", "header is not JSON"),
  }
  for name, (raw, message) in cases.items():
    path = tmp_path / f"{name}.safetensors"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=message):
      files.read_state_dict(str(path))
  path = _write_safetensors(tmp_path / "dtype.safetensors", {"w": good},
                            dtype_names={"w": "C64"})
  with pytest.raises(ValueError, match="dtype C64"):
    files.read_state_dict(path)
  path = _write_safetensors(tmp_path / "cut.safetensors", {"w": good})
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) - 4)
  with pytest.raises(ValueError, match="bad offsets"):
    files.read_state_dict(path)
  text = json.dumps({"w": {"dtype": "F32", "shape": [3, 3], "data_offsets": [0, 16]}}).encode()
  path = tmp_path / "shape.safetensors"
  path.write_bytes(struct.pack("<Q", len(text)) + text + good.tobytes())
  with pytest.raises(ValueError, match=r"bad offsets 0\.\.16 for shape \[3, 3\]"):
    files.read_state_dict(str(path))


def _touch_weights(folder, *names):
  folder.mkdir(parents=True, exist_ok=True)
  for name in names:
    value = np.full((2,), float(len(name)), np.float32)
    if name.endswith(".safetensors"):
      save_file({"w": value}, str(folder / name))
    else:
      write_torch_file({"w": value}, str(folder / name))
  return str(folder)


def test_model_weights_prefers_safetensors_then_plain_precision(tmp_path):
  stem = "diffusion_pytorch_model"
  cases = [
      ([f"{stem}.safetensors", f"{stem}.bin"], None, f"{stem}.safetensors"),
      ([f"{stem}.bin"], None, f"{stem}.bin"),
      ([f"{stem}.fp16.safetensors", f"{stem}.bin"], None, f"{stem}.bin"),
      ([f"{stem}.fp16.safetensors", f"{stem}.safetensors"], None, f"{stem}.safetensors"),
      ([f"{stem}.fp16.safetensors"], None, f"{stem}.fp16.safetensors"),
      ([f"{stem}.fp16.bin", f"{stem}.fp16.safetensors"], None, f"{stem}.fp16.safetensors"),
      ([f"{stem}.fp16.safetensors", f"{stem}.safetensors"], "fp16", f"{stem}.fp16.safetensors"),
  ]
  for i, (names, variant, want) in enumerate(cases):
    folder = _touch_weights(tmp_path / str(i), *names)
    got = files.model_weights(folder, variant=variant)
    assert os.path.basename(got) == want, (names, variant)
  text = _touch_weights(tmp_path / "text", "pytorch_model.bin")
  assert os.path.basename(files.model_weights(text, "model")) == "pytorch_model.bin"
  text = _touch_weights(tmp_path / "text2", "pytorch_model.bin", "model.safetensors")
  assert os.path.basename(files.model_weights(text, "model")) == "model.safetensors"
  folder = _touch_weights(tmp_path / "only_bin", f"{stem}.bin")
  with pytest.raises(FileNotFoundError, match=r"fp16.*diffusion_pytorch_model\.bin"):
    files.model_weights(folder, variant="fp16")
  with pytest.raises(FileNotFoundError, match="no such folder"):
    files.model_weights(str(tmp_path / "nowhere"))


def test_sharded_index_reads_each_tensor_from_its_shard(tmp_path):
  stem = "diffusion_pytorch_model"
  a = {"down.weight": np.arange(6, dtype=np.float32).reshape(2, 3)}
  b = {"up.weight": np.full((2,), 7.0, np.float32), "up.bias": np.zeros((2,), np.float16)}
  save_file(a, str(tmp_path / f"{stem}-00001-of-00002.safetensors"))
  save_file(b, str(tmp_path / f"{stem}-00002-of-00002.safetensors"))
  weight_map = {**{k: f"{stem}-00001-of-00002.safetensors" for k in a},
                **{k: f"{stem}-00002-of-00002.safetensors" for k in b}}
  with open(tmp_path / f"{stem}.safetensors.index.json", "w") as f:
    json.dump({"metadata": {"total_size": 44}, "weight_map": weight_map}, f)
  path = files.model_weights(str(tmp_path))
  assert path.endswith(f"{stem}.safetensors.index.json")
  sharded = files.read_state_dict(path)
  assert isinstance(sharded, files.ShardedFile) and sorted(sharded) == sorted(weight_map)
  for name, value in {**a, **b}.items():
    np.testing.assert_array_equal(sharded[name], value, err_msg=name)
    assert sharded[name].dtype == value.dtype
  bad = tmp_path / "bad.bin.index.json"
  bad.write_text(json.dumps({"metadata": {}}))
  with pytest.raises(ValueError, match="weight_map"):
    files.read_state_dict(str(bad))


def test_sharded_bin_index(tmp_path):
  write_torch_file({"a": np.ones(2, np.float32)}, str(tmp_path / "pytorch_model-1.bin"))
  write_torch_file({"b": np.zeros(3, np.float32)}, str(tmp_path / "pytorch_model-2.bin"))
  with open(tmp_path / "pytorch_model.bin.index.json", "w") as f:
    json.dump({"weight_map": {"a": "pytorch_model-1.bin", "b": "pytorch_model-2.bin"}}, f)
  path = files.model_weights(str(tmp_path), "model")
  assert path.endswith("pytorch_model.bin.index.json")
  sharded = files.read_state_dict(path)
  assert sharded["a"].shape == (2,) and sharded["b"].shape == (3,) and len(sharded) == 2


def test_unknown_extension_and_missing_file(tmp_path):
  path = tmp_path / "weights.onnx"
  path.write_bytes(b"\x00" * 16)
  with pytest.raises(files.UnknownFormatError) as info:
    files.read_state_dict(str(path))
  assert isinstance(info.value, ValueError)
  for ext in files.FORMATS:
    assert ext in str(info.value)
  with pytest.raises(FileNotFoundError, match="no weight file"):
    files.read_state_dict(str(tmp_path / "missing.safetensors"))


def test_a_called_torchscript_global_is_refused(tmp_path):
  """``__torch__.*`` names resolve to attribute holders (TorchScript archives); a pickle that
  calls one with arguments (``__torch__.os.system("...")``) is refused as a bad file."""
  marker = tmp_path / "pwned"
  data = (pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + pickle.MARK + pickle.BINUNICODE
          + struct.pack("<I", 1) + b"w" + _global_call("__torch__.os", "system",
                                                       f"touch {marker}")
          + pickle.SETITEMS + pickle.STOP)
  with pytest.raises(pickle.UnpicklingError, match="called with arguments"):
    files.read_state_dict(_zip(tmp_path / "torchscript.bin", data))
  assert not marker.exists()
