"""Attention at Stable Diffusion's 64 x 64 level on the CPU: jgen's against torch's SDPA.

  python benchmarks/attention_cpu.py        # needs torch (the reference extra)

One self-attention call of `benchmarks/sd_speed.py`'s level-0 transformer blocks: batch 2 (the
two halves of classifier-free guidance), 4,096 positions, 8 heads of 8 channels, float32, on 2
threads in both frameworks. Prints seconds per call for jgen's `jgen.nn.layers._attend` (the
logits and softmax as einsums in float32), `jax.nn.dot_product_attention` (XLA), the same with
the queries in blocks (`lax.map`), and `torch.nn.functional.scaled_dot_product_attention`
(a blocked kernel on CPU), with the largest difference of each output from jgen's.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

from jgen.nn.layers import _attend


def _time(fn, *args, repeats: int) -> float:
  fn(*args)
  start = time.perf_counter()
  for _ in range(repeats):
    out = fn(*args)
    if hasattr(out, "block_until_ready"):
      out.block_until_ready()
  return (time.perf_counter() - start) / repeats


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--positions", type=int, default=4096)
  parser.add_argument("--heads", type=int, default=8)
  parser.add_argument("--head_dim", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  torch.set_num_threads(2)
  shape = (2, args.positions, args.heads, args.head_dim)
  q, k, v = (np.random.RandomState(i).randn(*shape).astype(np.float32) for i in range(3))
  ours = jax.jit(lambda q, k, v: _attend(q, k, v, jnp.float32))
  want = np.asarray(ours(q, k, v))

  def blocked(q, k, v, block=512):
    b, n, h, d = q.shape
    parts = q.reshape(b, n // block, block, h, d).swapaxes(0, 1)
    out = jax.lax.map(lambda part: _attend(part, k, v, jnp.float32), parts)
    return out.swapaxes(0, 1).reshape(b, n, h, d)

  rows = [("jgen _attend (einsum)", ours),
          ("jax.nn.dot_product_attention", jax.jit(jax.nn.dot_product_attention)),
          ("jgen, queries in blocks of 512", jax.jit(blocked))]
  print(f"self-attention [2, {args.positions}, {args.heads} x {args.head_dim}], float32, "
        "2 threads")
  print(f"{'implementation':34s} {'s/call':>8s} {'max|diff|':>10s}")
  for name, fn in rows:
    seconds = _time(fn, q, k, v, repeats=args.repeats)
    diff = float(np.abs(np.asarray(fn(q, k, v)) - want).max())
    print(f"{name:34s} {seconds:8.3f} {diff:10.2e}")
  tq, tk, tv = (torch.from_numpy(x.transpose(0, 2, 1, 3).copy()) for x in (q, k, v))
  with torch.no_grad():
    sdpa = lambda: torch.nn.functional.scaled_dot_product_attention(tq, tk, tv)
    seconds = _time(sdpa, repeats=args.repeats)
    diff = float(np.abs(sdpa().numpy().transpose(0, 2, 1, 3) - want).max())
  print(f"{'torch scaled_dot_product_attention':34s} {seconds:8.3f} {diff:10.2e}")


if __name__ == "__main__":
  main()
