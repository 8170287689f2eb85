"""State bytes per device and train-step time of a config at several FSDP sizes.

  python benchmarks/sharding.py                       # ddpm/cifar, 8 simulated CPU devices
  python benchmarks/sharding.py --config experiments/ddpm/cifar.py --fsdp 1,2,4,8 --steps 3

Every FSDP size runs in its own process (the simulated device count is fixed when JAX starts;
on a GPU/TPU host the real devices are used). The state (params, EMA, Adam moments) is built
by the loop's own `restore_or_init` (`jgen.train.sharding`) on a `(data, fsdp)` mesh
(`jgen.train.mesh`), then the loop's jitted step runs `--steps` times after one compile.
Printed per size: the largest state bytes held by one device, the ratio to fsdp=1, XLA's
temporary bytes of the compiled step per device (`memory_analysis`), compile seconds and
seconds per step. On a CPU the simulated
devices share the same cores, so step times show the cost of the gathers, not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(config_path: str, fsdp: int, steps: int, batch_size: int) -> dict:
  """One FSDP size in this process: state bytes per device, compile and step seconds."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, REPO)
  from jgen import data as jdata  # pylint: disable=import-outside-toplevel
  from jgen.train import Checkpointer, load_method, sharding  # pylint: disable=import-outside-toplevel
  from jgen.train import mesh as mesh_lib  # pylint: disable=import-outside-toplevel
  from jgen.train.config import experiment_module  # pylint: disable=import-outside-toplevel

  path, _, arg = config_path.partition(":")
  name = os.path.splitext(os.path.basename(path))[0]
  config = experiment_module(name, path).get_config(arg or None)
  config.mesh.fsdp = fsdp
  config.data.batch_size = batch_size
  method = load_method(config)
  mesh = mesh_lib.make_mesh(fsdp=fsdp)
  size, ch = config.data.image_size, config.data.channels
  rng = np.random.default_rng(0)
  batch = {"image": rng.uniform(-1, 1, (batch_size, size, size, ch)).astype(np.float32)}
  if getattr(method, "num_classes", 0):
    batch["label"] = rng.integers(0, method.num_classes, batch_size).astype(np.int32)
  batch = jdata.shard_batch(batch, mesh_lib.batch_sharding(mesh))
  with tempfile.TemporaryDirectory() as workdir:
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
    state = sharding.restore_or_init(method, config, mesh, ckpt, batch, workdir=workdir)
    ckpt.close()
  per_device = mesh_lib.state_bytes_per_device(state.checkpoint_items())
  shardings = jax.tree.map(lambda x: x.sharding, state)
  repl = mesh_lib.replicated(mesh)
  step = jax.jit(lambda s, b: method.train_step(s, b, s.step_rng()), donate_argnums=0,
                 out_shardings=(shardings, repl))
  t0 = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  memory = compiled.memory_analysis()
  state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  t0 = time.perf_counter()
  for _ in range(steps):
    state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  return {"fsdp": fsdp, "devices": jax.device_count(),
          "params": int(sum(x.size for x in jax.tree.leaves(state.params))),
          "state_bytes_max": max(per_device.values()),
          "temp_bytes": getattr(memory, "temp_size_in_bytes", None),
          "compile_s": compile_s, "step_s": (time.perf_counter() - t0) / steps,
          "loss": float(metrics["loss"])}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default=os.path.join(REPO, "experiments", "ddpm", "cifar.py"))
  parser.add_argument("--fsdp", default="1,2,4,8")
  parser.add_argument("--devices", type=int, default=8, help="simulated CPU devices")
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.one is not None:
    print(json.dumps(measure(args.config, args.one, args.steps, args.batch_size)))
    return
  rows = []
  for k in [int(v) for v in args.fsdp.split(",")]:
    env = dict(os.environ, PYTHONPATH=REPO)
    if "cpu" in env.get("JAX_PLATFORMS", "cpu"):
      env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                          f" --xla_force_host_platform_device_count={args.devices}").strip()
    out = subprocess.run([sys.executable, __file__, "--one", str(k), "--config", args.config,
                          "--steps", str(args.steps), "--batch_size", str(args.batch_size)],
                         env=env, capture_output=True, text=True, check=False)
    if out.returncode:
      sys.exit(f"fsdp={k} failed:\n{out.stderr[-3000:]}")
    rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
  base = rows[0]["state_bytes_max"]
  print(f"{os.path.basename(args.config)}: {rows[0]['params']:,} parameters, "
        f"{rows[0]['devices']} devices, global batch {args.batch_size}\n")
  print("| fsdp | data | state MiB / device | fsdp=1 / this | step temp MiB / device | compile s "
        "| s / step | loss |")
  print("|---|---|---|---|---|---|---|---|")
  for r in rows:
    temp = "-" if r["temp_bytes"] is None else f"{r['temp_bytes'] / 2**20:.1f}"
    print(f"| {r['fsdp']} | {r['devices'] // r['fsdp']} | {r['state_bytes_max'] / 2**20:.1f} | "
          f"{base / r['state_bytes_max']:.2f} | {temp} | {r['compile_s']:.1f} | "
          f"{r['step_s']:.2f} | {r['loss']:.4f} |")


if __name__ == "__main__":
  main()
