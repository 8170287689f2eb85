"""Host memory of `python -m jgen.convert` on a checkpoint of Stable Diffusion 1.5's size.

  pip install -e ".[reference]"       # torch + diffusers + transformers (shapes and configs)
  python benchmarks/convert_memory.py                  # the diffusers folder and the single file
  python benchmarks/convert_memory.py --formats folder --keep --out /tmp/sd15_random
  python benchmarks/convert_memory.py --size small     # a 64-channel model: checks the script

Writes, with random weights and no network, a checkpoint of SD 1.5's architecture: the real
configs as dicts (``UNet2DConditionModel`` (320, 640, 1280, 1280), 2 layers per block, cross
attention 768, 8 heads, sample size 64; ``AutoencoderKL`` (128, 256, 512, 512); a 12-layer
``CLIPTextModel`` of width 768, vocabulary 49,408, quick_gelu), 1.07 billion float32 numbers,
4.3 GB (``--dtype float16``: 2.1 GB, the size most published files have; jgen converts to
float32, so the converted tree alone is twice the file). The models are built on torch's ``meta``
device (no weight is drawn there: only the names, shapes and ``config.json`` files are taken), and
each tensor is filled from numpy's PCG64 (N(0, 0.02^2)), which takes seconds where ``torch.nn.init``
on the real modules takes about a minute. The checkpoint is written under ``--out`` (default a fresh
folder in /tmp) as

* ``folder``: a diffusers ``StableDiffusionPipeline`` folder (``unet/``, ``vae/``,
  ``text_encoder/`` as float32 safetensors, a ``tokenizer/`` with a small byte-level BPE
  vocabulary learned by `sd_pipeline_reference.small_vocabulary`, ``scheduler/``);
* ``single``: one ``.safetensors`` in the CompVis/LDM layout (``model.diffusion_model.*``,
  ``first_stage_model.*``, ``cond_stage_model.transformer.*``), converted with ``--config``
  pointing at a generated config that names the tokenizer folder (a single file has none, and
  the open_clip vocabulary may not be installed).

Each is converted by ``python -m jgen.convert SRC WORKDIR`` in a child process, on the CPU
(``JAX_PLATFORMS=cpu``). Reported per format: the checkpoint's size, the child's peak resident
set (``VmHWM``, read by the child as it exits: it counts the memory-mapped checkpoint pages it
touched as well as its own allocations; ``ru_maxrss`` is not used, because Linux folds the RSS of
the forking parent into it), the peaks of its anonymous and file-backed parts (``RssAnon`` /
``RssFile`` of ``/proc/PID/status``, polled every 50 ms: the anonymous part is what the converter
allocates, the file part the page cache of the mapped safetensors, which the kernel may drop),
peak RSS / checkpoint size (and the same after subtracting the ``baseline`` row: a child that
only imports JAX, Orbax and the converter), and the wall time. The issue's requirement: converting
holds no more than about two copies of the checkpoint (ratio <= ~2). The checkpoint and the work
directories are deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.numpy import save_file
from transformers import CLIPTextConfig, CLIPTextModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# pylint: disable=wrong-import-position
from autoencoder_reference import LDM_PREFIX, diffusers_to_ldm  # noqa: E402
from sd_pipeline_reference import small_vocabulary  # noqa: E402
from unet_reference import to_ldm  # noqa: E402

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
GB = 1e9
# The child's fixed cost: Python, JAX's CPU backend, Orbax and the converter's imports.
BASELINE = "import jax; jax.devices(); from jgen.convert import pipeline"
# Runs a module as `python -m` would, then prints the process's peak RSS. VmHWM (the high-water
# mark of this process image) is read rather than ru_maxrss: Linux folds the RSS of the image
# that exec replaced (here the forking benchmark, torch and all) into ru_maxrss, in wait4's
# answer and in getrusage(RUSAGE_SELF) alike.
PRINT_PEAK = """
with open("/proc/self/status") as f:
  print("PEAK_KB", [l.split()[1] for l in f if l.startswith("VmHWM:")][0], flush=True)
"""
WRAPPER = """
import runpy, sys
module, sys.argv = sys.argv[1], sys.argv[1:]
{prelude}
try:
  runpy.run_module(module, run_name="__main__", alter_sys=True)
finally:
""" + PRINT_PEAK.replace("\n", "\n  ")
# `--orbax_no_copy`: the child first tells Orbax not to deep-copy numpy leaves before writing
# them (its NumpyHandler copies every host array of a save up front, so that an asynchronous
# save cannot see them change). jgen's converter now does this itself for its synchronous save
# (jgen.train.checkpoint.host_arrays_saved_in_place): with it the rows equal the default ones;
# before it, the default rows were 2.87 (folder) and 2.93 (single file) times the checkpoint.
NO_COPY = """
import numpy as np
import orbax.checkpoint as ocp
ocp.type_handlers.register_type_handler(
    np.ndarray, ocp.type_handlers.NumpyHandler(deepcopy_host_arrays=False), override=True)
"""

SIZES = {
    "sd15": {
        "unet": dict(sample_size=64, in_channels=4, out_channels=4,
                     block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
                     cross_attention_dim=768, attention_head_dim=8,
                     down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                     up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3),
        "vae": dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                    latent_channels=4, sample_size=512, in_channels=3, out_channels=3,
                    down_block_types=("DownEncoderBlock2D",) * 4,
                    up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.18215),
        "text": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                     intermediate_size=3072, vocab_size=49408, hidden_act="quick_gelu",
                     max_position_embeddings=77, projection_dim=768),
    },
    "small": {  # the same code path in seconds: checks the script, not the memory
        "unet": dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                     layers_per_block=1, cross_attention_dim=32, attention_head_dim=2,
                     norm_num_groups=8, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                     up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
        "vae": dict(block_out_channels=(32, 64), layers_per_block=1, latent_channels=4,
                    sample_size=16, in_channels=3, out_channels=3, norm_num_groups=8,
                    down_block_types=("DownEncoderBlock2D",) * 2,
                    up_block_types=("UpDecoderBlock2D",) * 2, scaling_factor=0.18215),
        "text": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, vocab_size=49408, hidden_act="quick_gelu",
                     max_position_embeddings=77, projection_dim=32),
    },
}
# What a single file cannot tell about the small model (SD 1.5's own sizes need none).
SMALL_OVERRIDES = {"unet": {"attention_head_dim": 2, "norm_num_groups": 8},
                   "vae": {"norm_num_groups": 8}, "text_encoder": {"head_dim": 16}}
SCHEDULER = {"_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
             "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
             "prediction_type": "epsilon", "set_alpha_to_one": False, "skip_prk_steps": True,
             "steps_offset": 1}


def meta_models(size: str) -> dict:
  """The three diffusers / transformers models of `size`, on the meta device (no storage)."""
  cfg = SIZES[size]
  with torch.device("meta"):
    return {"unet": UNet2DConditionModel(**cfg["unet"]), "vae": AutoencoderKL(**cfg["vae"]),
            "text_encoder": CLIPTextModel(CLIPTextConfig(**cfg["text"]))}


def random_state(model, rng: np.random.Generator, dtype: str = "float32", scale: float = 0.02
                 ) -> dict[str, np.ndarray]:
  """N(0, scale^2) arrays of `dtype` under the names and shapes of `model`'s state dict."""
  out = {}
  for name, t in model.state_dict().items():
    x = rng.standard_normal(tuple(t.shape), dtype=np.float32)
    x *= scale
    out[name] = x if dtype == "float32" else x.astype(dtype)
  return out


def write_tokenizer(folder: str) -> None:
  small_vocabulary(folder)
  with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
    json.dump({"model_max_length": 77, "pad_token": "<|endoftext|>",
               "tokenizer_class": "CLIPTokenizer"}, f)


def write_checkpoint(size: str, out: str, formats: tuple[str, ...], dtype: str = "float32",
                     seed: int = 0) -> dict[str, str]:
  """Writes the random checkpoint of `size` in `formats` and `dtype`; returns format -> path."""
  models = meta_models(size)
  rng = np.random.default_rng(seed)
  paths = {}
  folder = os.path.join(out, "pipeline")
  single: dict[str, np.ndarray] = {}
  for part, model in models.items():
    state = random_state(model, rng, dtype)
    if "folder" in formats:
      sub = os.path.join(folder, part)
      os.makedirs(sub, exist_ok=True)
      if part == "text_encoder":
        model.config.save_pretrained(sub)
        save_file(state, os.path.join(sub, "model.safetensors"), metadata={"format": "pt"})
      else:
        model.save_config(sub)
        save_file(state, os.path.join(sub, "diffusion_pytorch_model.safetensors"),
                  metadata={"format": "pt"})
    if "single" in formats:
      if part == "unet":
        single.update(to_ldm(state, dict(model.config)))
      elif part == "vae":
        levels = len(model.config.block_out_channels)
        for name, w in state.items():
          new = diffusers_to_ldm(name, levels)
          single[LDM_PREFIX + new] = w[:, :, None, None] if (
              ".mid.attn_1." in new and w.ndim == 2) else w
      else:
        single.update({f"cond_stage_model.transformer.{k}": v for k, v in state.items()})
    del state
  tokenizer = os.path.join(out, "tokenizer")
  write_tokenizer(tokenizer)
  if "folder" in formats:
    shutil.copytree(tokenizer, os.path.join(folder, "tokenizer"))
    os.makedirs(os.path.join(folder, "scheduler"), exist_ok=True)
    with open(os.path.join(folder, "scheduler", "scheduler_config.json"), "w") as f:
      json.dump(SCHEDULER, f)
    with open(os.path.join(folder, "model_index.json"), "w") as f:
      json.dump({"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.0",
                 "unet": ["diffusers", "UNet2DConditionModel"],
                 "vae": ["diffusers", "AutoencoderKL"],
                 "text_encoder": ["transformers", "CLIPTextModel"],
                 "tokenizer": ["transformers", "CLIPTokenizer"],
                 "scheduler": ["diffusers", "PNDMScheduler"],
                 "safety_checker": [None, None], "feature_extractor": [None, None]}, f)
    paths["folder"] = folder
  if "single" in formats:
    paths["single"] = os.path.join(out, "sd15_random.safetensors")
    save_file(single, paths["single"])
  return paths


def size_on_disk(path: str) -> int:
  """Bytes of the weight files under `path` (a file or a folder)."""
  if os.path.isfile(path):
    return os.path.getsize(path)
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(path)
             for f in names if f.endswith(".safetensors"))


def _status_kb(pid: int, fields: tuple[str, ...]) -> dict[str, int]:
  try:
    with open(f"/proc/{pid}/status") as f:
      lines = f.read().splitlines()
  except OSError:
    return {}
  out = {}
  for line in lines:
    key, _, value = line.partition(":")
    if key in fields:
      out[key] = int(value.split()[0])
  return out


def measure(argv: list[str], prelude: str = "") -> dict[str, float]:
  """Runs `argv` (``python -m module ...`` or ``python -c ...``) as a child, after the code
  `prelude` (``-m`` only); returns its peak RSS (VmHWM), peak RssAnon / RssFile (polled),
  seconds and output."""
  if argv[1] == "-m":
    argv = [argv[0], "-c", WRAPPER.format(prelude=prelude), *argv[2:]]
  elif argv[1] == "-c":
    argv = [argv[0], "-c", argv[2] + "\n" + PRINT_PEAK, *argv[3:]]
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO + os.pathsep
             + os.environ.get("PYTHONPATH", ""))
  t0 = time.perf_counter()
  proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  peaks = {"RssAnon": 0, "RssFile": 0}
  done = threading.Event()

  def poll():
    while not done.is_set():
      for k, v in _status_kb(proc.pid, tuple(peaks)).items():
        peaks[k] = max(peaks[k], v)
      done.wait(0.05)

  poller = threading.Thread(target=poll, daemon=True)
  poller.start()
  output = proc.stdout.read()
  proc.wait()
  seconds = time.perf_counter() - t0
  done.set()
  poller.join()
  if proc.returncode:
    raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{output[-4000:]}")
  peak_kb = [line.split()[1] for line in output.splitlines() if line.startswith("PEAK_KB")]
  return {"maxrss": int(peak_kb[-1]) * 1024, "anon": peaks["RssAnon"] * 1024,
          "file": peaks["RssFile"] * 1024, "seconds": seconds, "output": output}


def single_file_config(out: str, tokenizer: str) -> str:
  """A config file that is experiments/sd/txt2img.py with `tokenizer` as its tokenizer."""
  path = os.path.join(out, "sd_txt2img_local.py")
  with open(path, "w") as f:
    f.write(f'''"""experiments/sd/txt2img.py with a local tokenizer folder (convert_memory.py)."""
from jgen.train.config import experiment_module


def get_config(arg=None):
  c = experiment_module("sd/txt2img", {os.path.join(REPO, "experiments", "x.py")!r}
                        ).get_config(arg)
  c.text.tokenizer = {tokenizer!r}
  return c
''')
  return path


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", choices=sorted(SIZES), default="sd15")
  parser.add_argument("--formats", default="folder,single",
                      help="comma-separated: folder (diffusers), single (LDM .safetensors)")
  parser.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                      help="the checkpoint's dtype (jgen converts to float32 either way)")
  parser.add_argument("--out", help="where to write (default: a new folder in /tmp)")
  parser.add_argument("--orbax_no_copy", action="store_true",
                      help="also convert with Orbax's NumpyHandler(deepcopy_host_arrays=False) "
                      "set by the child (what jgen's converter now does itself)")
  parser.add_argument("--keep", action="store_true", help="keep the checkpoint and workdirs")
  args = parser.parse_args()
  formats = tuple(f for f in args.formats.split(",") if f)
  unknown = set(formats) - {"folder", "single"}
  if unknown:
    parser.error(f"unknown formats {sorted(unknown)}; use folder, single")
  out = args.out or tempfile.mkdtemp(prefix="jgen_convert_memory_", dir="/tmp")
  os.makedirs(out, exist_ok=True)
  try:
    t0 = time.perf_counter()
    paths = write_checkpoint(args.size, out, formats, args.dtype)
    print(f"wrote a random {args.size} checkpoint ({', '.join(formats)}) under {out} in "
          f"{time.perf_counter() - t0:.1f} s")
    base = measure([sys.executable, "-c", BASELINE])
    rows = []
    runs = [(fmt, src, "") for fmt, src in paths.items()]
    if args.orbax_no_copy:
      runs += [(f"{fmt}*", src, NO_COPY) for fmt, src in paths.items()]
    for name, src, prelude in runs:
      workdir = os.path.join(out, f"workdir_{name.replace('*', '_nocopy')}")
      argv = [sys.executable, "-m", "jgen.convert", src, workdir]
      if name.startswith("single"):
        argv += ["--config", single_file_config(out, os.path.join(out, "tokenizer"))]
        if args.size == "small":
          argv += ["--overrides", json.dumps(SMALL_OVERRIDES)]
      result = measure(argv, prelude)
      rows.append((name, size_on_disk(src), result))
      shown = "\n  ".join(line for line in result["output"].strip().splitlines()
                          if line.startswith(("converted", "error", "PEAK")))
      print(f"{name}: python {' '.join(argv[1:])}\n  {shown}")
      shutil.rmtree(workdir, ignore_errors=True)  # the disk, for the next run
    print(f"\npython -m jgen.convert on a random {args.size} checkpoint, {args.dtype} safetensors "
          "(GB = 1e9 bytes; ratio = peak RSS / checkpoint size)")
    header = (f"{'format':<8} {'checkpoint GB':>13} {'peak RSS GB':>11} {'anon GB':>8} "
              f"{'file GB':>8} {'ratio':>6} {'ratio-base':>10} {'seconds':>8}")
    print(header)
    print("-" * len(header))
    print(f"{'baseline':<8} {'':>13} {base['maxrss'] / GB:>11.2f} {base['anon'] / GB:>8.2f} "
          f"{base['file'] / GB:>8.2f} {'':>6} {'':>10} {base['seconds']:>8.1f}")
    for fmt, size, r in rows:
      print(f"{fmt:<8} {size / GB:>13.2f} {r['maxrss'] / GB:>11.2f} {r['anon'] / GB:>8.2f} "
            f"{r['file'] / GB:>8.2f} {r['maxrss'] / size:>6.2f} "
            f"{(r['maxrss'] - base['maxrss']) / size:>10.2f} {r['seconds']:>8.1f}")
    if args.orbax_no_copy:
      print("*: Orbax's NumpyHandler told not to deep-copy the leaves it saves")
  finally:
    if args.keep:
      print(f"kept {out}")
    else:
      shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
  main()
