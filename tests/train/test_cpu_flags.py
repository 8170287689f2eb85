"""jgen's XLA:CPU flags (`jgen.xla.set_cpu_xla_flags`): how they merge into XLA_FLAGS, and, in a
fresh process, that this jaxlib accepts them, moves convolutions off YNNPACK and still computes
a convolution and its gradients correctly (against NumPy)."""

import json
import subprocess
import sys

import numpy as np

from jgen.xla import CPU_XLA_FLAGS, CPU_XLA_FLAGS_JAXLIB, set_cpu_xla_flags
from tests.conftest import subprocess_env

_IN_RANGE = CPU_XLA_FLAGS_JAXLIB[0]
_FLAG = "--xla_cpu_experimental_ynn_fusion_type"


def test_flags_are_appended_to_the_users():
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  out = set_cpu_xla_flags(env, _IN_RANGE)
  assert out == env["XLA_FLAGS"]
  assert out.startswith("--xla_force_host_platform_device_count=8 ")
  for name, value in CPU_XLA_FLAGS.items():
    assert f"--{name}={value}" in out
  assert set_cpu_xla_flags(env, _IN_RANGE) == out  # a second call adds nothing


def test_users_value_wins_and_opt_out_and_other_jaxlibs_are_left_alone():
  env = {"XLA_FLAGS": f"{_FLAG}="}
  assert set_cpu_xla_flags(env, _IN_RANGE) == f"{_FLAG}="
  env = {"JGEN_CPU_XLA_FLAGS": "0"}
  assert set_cpu_xla_flags(env, _IN_RANGE) == "" and "XLA_FLAGS" not in env
  env = {}
  assert set_cpu_xla_flags(env, CPU_XLA_FLAGS_JAXLIB[1]) == "" and "XLA_FLAGS" not in env


_CHILD = r"""
import json, re
import numpy as np
from jgen.xla import set_cpu_xla_flags
flags = set_cpu_xla_flags()
import jax, jax.numpy as jnp
rng = np.random.default_rng(0)
x = rng.standard_normal((2, 16, 16, 32)).astype(np.float32)
w = rng.standard_normal((3, 3, 32, 32)).astype(np.float32)
dy = rng.standard_normal((2, 16, 16, 32)).astype(np.float32)
conv = lambda x, w: jax.lax.conv_general_dilated(
    x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
f = jax.jit(lambda x, w, dy: (conv(x, w),) + jax.vjp(conv, x, w)[1](dy))
hlo = f.lower(x, w, dy).compile().as_text()
bodies = re.findall(r"calls=%([\w.]+)", " ".join(l for l in hlo.splitlines() if "ynn_fusion" in l))
ynn_conv = any("convolution(" in hlo.split(f"%{b} ")[1].split("}\n")[0] for b in bodies)
y, gx, gw = (np.asarray(a).tolist() for a in f(x, w, dy))
print(json.dumps(dict(flags=flags, ynn_conv=ynn_conv, y=y, gx=gx, gw=gw)))
"""


def _numpy_conv_and_grads(x, w, dy):
  """SAME 3x3 cross-correlation and its input and kernel gradients, as loops over the taps."""
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  h, wd = x.shape[1:3]
  y = np.zeros(dy.shape, np.float64)
  gxp = np.zeros(xp.shape, np.float64)
  gw = np.zeros(w.shape, np.float64)
  for i in range(3):
    for j in range(3):
      patch = xp[:, i:i + h, j:j + wd]
      y += patch @ w[i, j]
      gxp[:, i:i + h, j:j + wd] += dy @ w[i, j].T
      gw[i, j] = np.einsum("bhwc,bhwd->cd", patch, dy)
  return y, gxp[:, 1:-1, 1:-1], gw


def _child(**env) -> dict:
  proc = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True,
                        env=subprocess_env(**env), timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_fresh_process_accepts_the_flags_and_convolves_correctly():
  out = _child()
  import jaxlib  # pylint: disable=import-outside-toplevel
  version = tuple(int(v) for v in jaxlib.__version__.split(".")[:2])
  if CPU_XLA_FLAGS_JAXLIB[0] <= version < CPU_XLA_FLAGS_JAXLIB[1]:
    assert f"{_FLAG}=-individual_convolution" in out["flags"]
    assert not out["ynn_conv"], "a convolution still runs in a YNNPACK fusion"
    # The control: XLA's defaults put this convolution in a YNNPACK fusion.
    assert _child(JGEN_CPU_XLA_FLAGS="0")["ynn_conv"]
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 16, 16, 32)).astype(np.float32)
  w = rng.standard_normal((3, 3, 32, 32)).astype(np.float32)
  dy = rng.standard_normal((2, 16, 16, 32)).astype(np.float32)
  for got, want in zip((out["y"], out["gx"], out["gw"]), _numpy_conv_and_grads(x, w, dy)):
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-3)
