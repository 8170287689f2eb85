"""Stable Diffusion text-to-image in jgen against diffusers, on the same random weights.

  pip install -e ".[reference]"       # torch + diffusers + transformers
  python benchmarks/sd_speed.py                    # CPU: a mid-size SD-shaped pipeline
  python benchmarks/sd_speed.py --device gpu       # GPU: SD 1.5's size, 512 x 512, 50 steps
  python benchmarks/sd_speed.py --steps 5 --repeats 1 --size small   # a quick check

One ``StableDiffusionPipeline`` is built from config dicts with random weights (no network;
torch's default initialisation, seeded), saved with ``save_pretrained`` into a temporary folder
(with a small byte-level BPE tokenizer, `sd_pipeline_reference.small_vocabulary`) and converted
by `jgen.convert.pipeline.convert` into a jgen work directory, which is restored as the
``diffusion.stable_diffusion`` method (`jgen.train.inference.restore_for_inference`). Both sides
then draw the same image: one prompt and a negative prompt, classifier-free guidance 7.5, DDIM with
``timestep_spacing="trailing"`` (jgen's ``sample.spacing``), the same initial latents, decoding
included.

* jgen: ``method.sample_tokens`` under one ``jax.jit`` (text encoder, the ``lax.scan`` over the
  steps, the decoder); lowering + compiling is timed apart ("compile s") and the calls after it
  are timed.
* diffusers: ``pipe(prompt, negative_prompt=..., latents=..., output_type="np")`` under
  ``torch.inference_mode``; its first call is a warm-up, not timed. With ``torch.compile`` (GPU
  rows) the U-Net is compiled (``fullgraph=True``) and the first call's time minus a steady
  call's is its compile time.

Timed calls alternate between the frameworks (after ``--settle`` seconds of sleep each, so one
framework's worker threads are not still spinning during the other's call); the table gives the
median seconds per image, images/s, jgen's speed relative to diffusers (> 1: jgen faster) and
the largest pixel difference from the float32 (CPU) or fp16 (GPU) diffusers image (in [0, 1]).

CPU (default): U-Net (64, 128, 256, 256), 2 layers per block, 8 heads, cross attention 768;
AutoencoderKL (32, 64, 128, 128); SD 1.5's text encoder size (768 wide, 12 layers); 64 x 64
latents (512 x 512 images), 20 steps, batch 1, float32. jgen runs with launch.py's XLA:CPU flags
(`jgen.xla.set_cpu_xla_flags`); XLA:CPU's intra-op pool has one thread per schedulable core, and
torch's intra-op threads are set to the same number (``--threads`` to change torch's).

GPU (``--device gpu``): SD 1.5's sizes (U-Net (320, 640, 1280, 1280), VAE (128, 256, 512, 512)),
512 x 512, 50 steps; jgen in float32 and with ``model.dtype="bfloat16"`` (float32 weights,
bfloat16 compute) against diffusers in fp16 (weights and compute), eager and with
``torch.compile``. It stops at once, before building anything, when CUDA or JAX's GPU backend is
missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings

from jgen.xla import set_cpu_xla_flags

set_cpu_xla_flags()  # before JAX starts its backends, as launch.py
# GPU: JAX allocates as it goes, so torch's caching allocator finds memory beside it.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

# pylint: disable=wrong-import-position
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

PROMPT = "a photo of a cat"
NEGATIVE = "blurry"
SIZE_NAMES = ("cpu", "small", "sd15")


def pipelines() -> dict[str, dict]:
  """Size name -> the diffusers / transformers config dicts of its three models."""
  from convert_memory import SIZES  # pylint: disable=import-outside-toplevel
  return {
      "cpu": {  # a mid-size SD-shaped pipeline: SD 1.5's U-Net layout at a fifth of the width
          "unet": dict(SIZES["sd15"]["unet"], block_out_channels=(64, 128, 256, 256)),
          "vae": dict(SIZES["sd15"]["vae"], block_out_channels=(32, 64, 128, 128)),
          "text": SIZES["sd15"]["text"],
      },
      "small": {  # seconds: checks the script, not the speed
          "unet": dict(SIZES["sd15"]["unet"], block_out_channels=(32, 32, 64, 64),
                       cross_attention_dim=64, attention_head_dim=4, sample_size=16),
          "vae": dict(SIZES["sd15"]["vae"], block_out_channels=(32, 32, 32, 32),
                      sample_size=128),
          "text": dict(SIZES["sd15"]["text"], hidden_size=64, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=128, projection_dim=64),
      },
      "sd15": SIZES["sd15"],
  }


@dataclasses.dataclass
class Row:
  name: str
  seconds: list[float]
  compile_s: float
  diff: float

  @property
  def per_image(self) -> float:
    return statistics.median(self.seconds)


def build_pipeline(size: str, folder: str, device: str, seed: int = 0):
  """A random `StableDiffusionPipeline` of `size` saved to `folder` (float32)."""
  # pylint: disable=import-outside-toplevel
  import torch
  from diffusers import AutoencoderKL, UNet2DConditionModel
  from diffusers.utils import logging as diffusers_logging
  from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
  from transformers.utils import logging as transformers_logging

  from convert_memory import write_tokenizer
  from sd_pipeline_reference import pipeline_like_jgen
  diffusers_logging.set_verbosity_error()
  diffusers_logging.disable_progress_bar()
  transformers_logging.set_verbosity_error()
  warnings.filterwarnings("ignore", message="(?s).*steps_offset")
  cfg = pipelines()[size]
  torch.manual_seed(seed)
  with torch.device(device):
    unet = UNet2DConditionModel(**cfg["unet"])
    vae = AutoencoderKL(**cfg["vae"])
    text = CLIPTextModel(CLIPTextConfig(**cfg["text"]))
  tok_dir = os.path.join(folder, "_tokenizer")
  write_tokenizer(tok_dir)
  tokenizer = CLIPTokenizer(os.path.join(tok_dir, "vocab.json"),
                            os.path.join(tok_dir, "merges.txt"), pad_token="<|endoftext|>",
                            model_max_length=77)
  pipe = pipeline_like_jgen(unet, vae, text, tokenizer)
  pipe.set_progress_bar_config(disable=True)
  pipe.save_pretrained(os.path.join(folder, "pipeline"))
  shutil.rmtree(tok_dir)
  return pipe


def jgen_sampler(workdir: str, steps: int, guidance: float, dtype: str):
  """(jitted fn(state, latents NHWC) -> images in [0, 1] NHWC, the restored state) of the
  converted `workdir`, computing in `dtype`."""
  from jgen.train import run_record  # pylint: disable=import-outside-toplevel
  from jgen.train.inference import restore_for_inference  # pylint: disable=import-outside-toplevel
  config = run_record.latest_config(workdir)
  config.sample.prompts = PROMPT
  config.sample.negative_prompt = NEGATIVE
  config.sample.steps = steps
  config.sample.sampler = "ddim"
  config.sample.spacing = "trailing"
  config.sample.eta = 0.0
  config.model.dtype = dtype
  method, _, state = restore_for_inference(config, workdir)
  tokens = jnp.asarray(method.prompts[:1])
  negative = jnp.asarray(method.negative[None])

  def sample(state, x_T):
    images = method.sample_tokens(state, jax.random.key(0), tokens, negative,
                                  guidance_scale=guidance, x_T=x_T)
    return (images + 1.0) / 2.0

  return jax.jit(sample), state


def settle_and_time(fn, settle: float, sync) -> tuple[float, object]:
  """(seconds, output) of one call of `fn`, after `settle` seconds of sleep."""
  time.sleep(settle)
  t0 = time.perf_counter()
  out = fn()
  sync(out)
  return time.perf_counter() - t0, out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
  parser.add_argument("--size", choices=SIZE_NAMES,
                      help="pipeline (default: cpu on the CPU, sd15 on a GPU)")
  parser.add_argument("--steps", type=int, help="DDIM steps (default: 20 CPU, 50 GPU)")
  parser.add_argument("--batch", type=int, default=1, help="images per call")
  parser.add_argument("--guidance", type=float, default=7.5)
  parser.add_argument("--repeats", type=int, help="timed calls (default: 2 CPU, 5 GPU)")
  parser.add_argument("--threads", type=int,
                      help="torch intra-op threads (default: the schedulable cores, XLA's count)")
  parser.add_argument("--settle", type=float, default=0.5, help="sleep before each timed call")
  parser.add_argument("--no_torch_compile", action="store_true",
                      help="GPU: skip the torch.compile row")
  args = parser.parse_args()
  gpu = args.device == "gpu"
  if gpu:
    import torch  # pylint: disable=import-outside-toplevel
    backend = jax.default_backend()
    if not torch.cuda.is_available() or backend != "gpu":
      sys.exit(f"--device gpu needs CUDA for torch (available: {torch.cuda.is_available()}) and "
               f"JAX's GPU backend (JAX runs on {backend!r}); run it on a GPU machine, or drop "
               "--device gpu for the CPU comparison")
  size = args.size or ("sd15" if gpu else "cpu")
  steps = args.steps or (50 if gpu else 20)
  repeats = args.repeats or (5 if gpu else 2)
  cores = len(os.sched_getaffinity(0))
  import torch  # pylint: disable=import-outside-toplevel
  threads = args.threads or cores
  torch.set_num_threads(threads)

  tmp = tempfile.mkdtemp(prefix="jgen_sd_speed_")
  try:
    t0 = time.perf_counter()
    pipe = build_pipeline(size, tmp, "cuda" if gpu else "cpu")
    from jgen.convert import pipeline as convert  # pylint: disable=import-outside-toplevel
    workdir = os.path.join(tmp, "workdir")
    convert.convert(os.path.join(tmp, "pipeline"), workdir)
    print(f"built, saved and converted a random {size} pipeline in "
          f"{time.perf_counter() - t0:.1f} s")
    unet_cfg = pipelines()[size]["unet"]
    latent = unet_cfg["sample_size"]
    latents = np.random.RandomState(0).randn(args.batch, 4, latent, latent).astype(np.float32)

    torch_device = "cuda" if gpu else "cpu"
    sync = (lambda x: torch.cuda.synchronize()) if gpu else (lambda x: x)

    def torch_call(unet):
      def call():
        pipe.unet = unet
        with torch.inference_mode():
          return pipe([PROMPT] * args.batch, negative_prompt=[NEGATIVE] * args.batch,
                      num_inference_steps=steps, guidance_scale=args.guidance,
                      latents=torch.from_numpy(latents).to(torch_device, pipe.unet.dtype),
                      output_type="np").images
      return call

    if gpu:
      pipe = pipe.to(torch.float16)
    eager_unet = pipe.unet
    name = "diffusers " + ("fp16" if gpu else "fp32")
    calls = {name: torch_call(eager_unet)}
    results = {name: Row(name, [], 0.0, 0.0)}
    reference = np.asarray(calls[name]())  # the warm-up call, not timed
    if gpu and not args.no_torch_compile:
      name = "diffusers fp16 torch.compile"
      calls[name] = torch_call(torch.compile(eager_unet, fullgraph=True))
      first, _ = settle_and_time(calls[name], args.settle, sync)
      steady, _ = settle_and_time(calls[name], args.settle, sync)
      results[name] = Row(name, [], first - steady, 0.0)

    x_T = jnp.asarray(latents.transpose(0, 2, 3, 1))
    for dtype in (("float32", "bfloat16") if gpu else ("float32",)):
      fn, state = jgen_sampler(workdir, steps, args.guidance, dtype)
      t0 = time.perf_counter()
      compiled = fn.lower(state, x_T).compile()
      name = f"jgen {dtype}"
      results[name] = Row(name, [], time.perf_counter() - t0, 0.0)
      calls[name] = lambda c=compiled, s=state: c(s, x_T)

    outputs = {}
    for r in range(repeats):
      order = list(calls.items())
      for name, call in (order if r % 2 == 0 else order[::-1]):
        block = jax.block_until_ready if name.startswith("jgen") else sync
        seconds, outputs[name] = settle_and_time(call, args.settle, block)
        results[name].seconds.append(seconds)
    for name, out in outputs.items():
      results[name].diff = float(np.abs(np.asarray(out, np.float32) - reference).max())

    base = next(iter(results.values()))
    xla_threads = cores if not gpu else "-"
    print(f"\nSD text-to-image, {size} pipeline, {latent * 8} x {latent * 8} ({latent} x {latent} "
          f"latents), {steps} DDIM steps, CFG {args.guidance}, batch {args.batch}, "
          f"{'GPU ' + torch.cuda.get_device_name() if gpu else 'CPU'}; "
          f"torch {torch.__version__} ({threads} intra-op threads), jax {jax.__version__} "
          f"(XLA:CPU pool: {xla_threads} threads, one per schedulable core); "
          f"median of {repeats}")
    header = (f"{'':<30} {'s/image':>8} {'images/s':>9} {'vs diffusers':>12} "
              f"{'compile s':>10} {'max |diff|':>10}")
    print(header)
    print("-" * len(header))
    for row in results.values():
      per_image = row.per_image / args.batch
      print(f"{row.name:<30} {per_image:>8.3f} {1 / per_image:>9.3f} "
            f"{base.per_image / row.per_image:>12.2f} {row.compile_s:>10.1f} {row.diff:>10.2e}")
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  main()
