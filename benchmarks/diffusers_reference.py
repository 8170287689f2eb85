"""Writes the diffusers reference trajectories that tests/diffusion/test_solver_parity.py checks.

  pip install -e ".[bench]"     # torch + diffusers; jgen itself never imports them
  python benchmarks/diffusers_reference.py --out tests/diffusion/fixtures/diffusers_solvers.npz

The model is not a network but the exact noise prediction of a known data distribution, a 1-D
mixture of two Gaussians, so any difference between two solvers is the solvers' own: data
x0 ~ w N(m1, s1^2) + (1 - w) N(m2, s2^2); under x_t = a x0 + b eps (a^2 = alphabar, a^2 + b^2 = 1)
x_t is the mixture with means a m_k and variances a^2 s_k^2 + b^2, and the optimal noise
prediction is eps*(x_t) = -b d/dx log p_t(x_t). A fractional timestep t (Euler/Heun) gets its
alphabar from sigma(t) = exp(interp(t, 0..T-1, log sigma_k)), sigma_k = sqrt((1 - abar_k)/abar_k),
the interpolation diffusers uses to map Karras sigmas to timesteps.

Schedulers (diffusers defaults unless stated; linear betas 1e-4..0.02, T = 1000, epsilon
prediction): DPMSolverMultistepScheduler (dpmsolver++, order 2, timestep_spacing linspace,
final_sigmas_type zero), EulerDiscreteScheduler and HeunDiscreteScheduler with
use_karras_sigmas=True. Each runs from the same x_T for 10 and 20 steps; the fixture stores x_T,
the mixture and every final sample (float64).
"""

from __future__ import annotations

import argparse

import numpy as np

MIXTURE = {"w": 0.3, "m1": -0.6, "s1": 0.15, "m2": 0.5, "s2": 0.25}
T, BETA_START, BETA_END = 1000, 1e-4, 0.02
STEPS = (10, 20)


def log_sigmas() -> np.ndarray:
  betas = np.linspace(BETA_START, BETA_END, T, dtype=np.float64)
  abar = np.cumprod(1.0 - betas)
  return np.log(np.sqrt((1.0 - abar) / abar))


def optimal_eps(x: np.ndarray, t: np.ndarray) -> np.ndarray:
  """eps*(x_t) of the mixture at (possibly fractional) timesteps t, float64."""
  sigma = np.exp(np.interp(np.asarray(t, np.float64), np.arange(T), log_sigmas()))
  abar = 1.0 / (1.0 + sigma**2)
  a, b = np.sqrt(abar), np.sqrt(1.0 - abar)
  mix = MIXTURE
  comps = [(mix["w"], mix["m1"], mix["s1"]), (1.0 - mix["w"], mix["m2"], mix["s2"])]
  var = [a**2 * s**2 + b**2 for _, _, s in comps]
  logp = [np.log(w) - 0.5 * np.log(2 * np.pi * v) - 0.5 * (x - a * m) ** 2 / v
          for (w, m, _), v in zip(comps, var)]
  top = np.maximum(logp[0], logp[1])
  r = [np.exp(lp - top) for lp in logp]
  r0 = r[0] / (r[0] + r[1])
  score = r0 * (-(x - a * comps[0][1]) / var[0]) + (1 - r0) * (-(x - a * comps[1][1]) / var[1])
  return -b * score


def run(scheduler, x_t: np.ndarray, steps: int) -> np.ndarray:
  import torch  # pylint: disable=import-outside-toplevel

  scheduler.set_timesteps(steps)
  sample = torch.from_numpy(x_t).to(torch.float64) * scheduler.init_noise_sigma
  for t in scheduler.timesteps:
    model_in = scheduler.scale_model_input(sample, t)
    t_batch = np.full(model_in.shape, float(t))
    eps = torch.from_numpy(optimal_eps(model_in.numpy(), t_batch))
    sample = scheduler.step(eps, t, sample).prev_sample
  return sample.numpy()


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", default="tests/diffusion/fixtures/diffusers_solvers.npz")
  p.add_argument("--n", type=int, default=256)
  args = p.parse_args()
  import diffusers  # pylint: disable=import-outside-toplevel

  common = dict(num_train_timesteps=T, beta_start=BETA_START, beta_end=BETA_END,
                beta_schedule="linear", prediction_type="epsilon")
  makers = {
      "dpmpp_2m": lambda: diffusers.DPMSolverMultistepScheduler(
          algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="linspace",
          final_sigmas_type="zero", **common),
      "euler": lambda: diffusers.EulerDiscreteScheduler(use_karras_sigmas=True, **common),
      "heun": lambda: diffusers.HeunDiscreteScheduler(use_karras_sigmas=True, **common),
  }
  x_t = np.random.default_rng(0).standard_normal((args.n, 1))
  out = {"x_T": x_t, "diffusers_version": np.array(diffusers.__version__),
         **{f"mixture_{k}": np.array(v) for k, v in MIXTURE.items()}}
  for name, make in makers.items():
    for steps in STEPS:
      out[f"{name}_{steps}"] = run(make(), x_t, steps)
      print(f"{name} {steps} steps: mean {out[f'{name}_{steps}'].mean():+.5f}")
  np.savez(args.out, **out)
  print("wrote", args.out)


if __name__ == "__main__":
  main()
