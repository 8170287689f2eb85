"""Writes fixed-seed samples, losses and sample tags of the DDPM-family methods to an .npz, to
compare two checkouts bit for bit (a refactor must not change a fixed-seed output).

  (cd OLD_CHECKOUT && python /path/to/benchmarks/fixed_seed_samples.py /tmp/old.npz)
  python benchmarks/fixed_seed_samples.py /tmp/new.npz
  python benchmarks/fixed_seed_samples.py --compare /tmp/old.npz /tmp/new.npz

Covers ddpm_digits and ddpm_cond_digits (`:smoke`, initial parameters of key 0) with every
prediction ('eps', 'v', 'x0') and every sampler of the discrete chain ('ddpm', 'ddim' at eta
0.5, 'dpmpp_2m', 'euler', 'heun'): 4 samples of key 1 and the training loss of key 2.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, ".")
from jgen.train import load_method  # noqa: E402
from tests.conftest import load_experiment  # noqa: E402


def outputs() -> dict[str, np.ndarray]:
  out = {}
  for name in ("ddpm/digits", "ddpm/cond_digits"):
    for pred in ("eps", "v", "x0"):
      for sampler in ("ddpm", "ddim", "dpmpp_2m", "euler", "heun"):
        c = load_experiment(name, "smoke")
        c.diffusion.prediction = pred
        c.sample.sampler = sampler
        c.sample.eta = 0.5
        method = load_method(c)
        batch = {"image": jnp.zeros((2, 8, 8, 1))}
        if c.model.num_classes:
          batch["label"] = jnp.zeros((2,), jnp.int32)
        state = method.init(jax.random.key(0), batch)
        key = f"{name}/{pred}/{sampler}"
        out[key] = np.asarray(jax.jit(method.sample, static_argnums=2)(
            state, jax.random.key(1), 4))
        out[key + "/loss"] = np.asarray(jax.jit(method.loss_fn)(
            state.params, batch, jax.random.key(2))[0])
        out[key + "/tag"] = np.asarray(method.sample_tag)
  return out


def main(argv: list[str]) -> None:
  if argv[:1] == ["--compare"]:
    a, b = np.load(argv[1]), np.load(argv[2])
    differ = [k for k in a.files if k not in b.files or not np.array_equal(a[k], b[k])]
    print(f"{len(a.files)} outputs, {len(differ)} differ" + (f": {differ}" if differ else ""))
    return
  out = outputs()
  np.savez(argv[0], **out)
  print(f"wrote {len(out)} outputs to {argv[0]}")


if __name__ == "__main__":
  main(sys.argv[1:])
