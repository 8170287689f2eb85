"""Writes the diffusers references that tests/diffusion/test_continuous_parity.py checks.

  pip install -e ".[reference]"  # torch + diffusers; jgen itself never imports them
  python benchmarks/continuous_reference.py --out tests/diffusion/fixtures/continuous_reference.npz

As in benchmarks/diffusers_reference.py the model is not a network but the exact prediction of a
known data distribution, the 1-D two-Gaussian mixture x0 ~ w N(m1, s1^2) + (1 - w) N(m2, s2^2)
(applied elementwise to samples of shape [64, 2]), so a difference between two samplers is the
samplers' own. Everything here is float64 NumPy; the tests write the same functions again in jax.

* Flow matching (`jgen.diffusion.ode_sample`, `Linear`, prediction 'velocity', method 'euler'):
  on x_t = (1 - t) x0 + t eps component k gives x_t ~ N((1 - t) m_k, v_k), v_k = (1 - t)^2 s_k^2
  + t^2, and the exact velocity is u*(x, t) = E[eps - x0 | x_t = x] = sum_k r_k (t (x - (1 - t)
  m_k) / v_k - m_k - (1 - t) s_k^2 (x - (1 - t) m_k) / v_k), r_k the posterior of component k.
  Reference: diffusers' `FlowMatchEulerDiscreteScheduler()` (defaults, num_train_timesteps 1000)
  and `FlowMatchEulerDiscreteScheduler(shift=3.0)`, fed velocity = u*(x, sigma_i) at each of its
  sigmas. Grid matched: `set_timesteps(sigmas=u[:-1])` with u = linspace(1, 0, steps + 1) (float32,
  as the scheduler casts it), *unshifted*: diffusers applies its config `shift` to sigmas that are
  passed in (sigma' = shift sigma / (1 + (shift - 1) sigma), Esser et al.'s Eq. 23, the same warp
  as `jgen.diffusion.ode_times`) and appends the final 0 itself, so its sigmas are exactly
  `ode_times(Linear(), steps, shift=shift)`. Its *default* grid is different and is recorded as
  `fm_default_sigmas_{shift}_{steps}` for the test's docstring: `set_timesteps(steps)` spaces
  `steps` sigmas linearly from sigma_max = 1 to sigma_min = shift(1 / 1000) (the shifted smallest
  training sigma), shifts them *again*, then appends 0: for steps > 1 its last step jumps from
  1e-3 (shift 1) or 8.9e-3 (shift 3, shifted twice) to 0 (one step is [1, 0] in both). The
  scheduler holds the state in float32 (its `step` casts `sample` to float32 every step).
* EDM (`jgen.diffusion.edm_sample`, `EDM()` process, prediction 'x0', second_order=False):
  the exact denoiser D*(x; sigma) = E[x0 | x0 + sigma eps = x] = sum_k r_k (m_k + s_k^2 (x - m_k)
  / (s_k^2 + sigma^2)). Reference: diffusers' `EDMEulerScheduler(sigma_min=0.002, sigma_max=80,
  sigma_data=0.5, rho=7)` (its defaults: Karras grid, final sigma 0, 'epsilon' preconditioning),
  `set_timesteps(steps)`. Two ways of driving it:
  - 'native', as diffusers' pipelines do: the model gets `scale_model_input(x, t)` = c_in(sigma_i)
    x and returns F with `precondition_outputs(x, F, sigma) = c_skip x + c_out F = D*(x; sigma)`,
    i.e. F = (D*(x; sigma) - c_skip(sigma) x) / c_out(sigma);
  - 'alg2': Karras et al.'s Algorithm 2 (k-diffusion's `sample_euler`), which evaluates the
    denoiser at the churned state: `step(..., pred_original_sample=D*(x_hat; sigma_hat))`.
  With s_churn = 0 they coincide. With churn they do not: diffusers' `step` adds the churn noise
  (x_hat = x + sqrt(sigma_hat^2 - sigma^2) s_noise z) *after* the model was called on (x, sigma),
  then forms D = c_skip(sigma_hat) x_hat + c_out(sigma_hat) F(x; sigma), a denoiser of neither
  state. jgen implements Algorithm 2, so the test compares it with 'alg2'; 'native' is recorded
  to show the size of that difference. The churn noise is jgen's own: z_i =
  jax.random.normal(jax.random.fold_in(step_rng, i), shape) with
  `_, step_rng = jax.random.split(jax.random.key(EDM_SEED))` (jax computes it here and it is
  stored as `edm_z_{steps}`); diffusers' `randn_tensor` is patched to return z_{step_index}.
  The same x_T (std sigma_max = 80, jgen's prior) starts both: diffusers' `init_noise_sigma`
  is sqrt(sigma_max^2 + 1), which is not used.

The fixture stores x_T, the grids, the churn noise, every final sample (float64) and the
diffusers / torch / jax versions.
"""

from __future__ import annotations

import argparse

import numpy as np

MIXTURE = {"w": 0.3, "m1": -0.6, "s1": 0.15, "m2": 0.5, "s2": 0.25}
SHAPE = (64, 2)
FM_STEPS = (1, 4, 10)
FM_SHIFTS = (1.0, 3.0)
EDM = {"sigma_min": 0.002, "sigma_max": 80.0, "sigma_data": 0.5, "rho": 7.0}
EDM_STEPS = (1, 4, 10, 18)
EDM_CHURN = {"s_churn": 4.0, "s_tmin": 0.05, "s_tmax": 50.0, "s_noise": 1.003}
EDM_CHURN_STEPS = (10, 18)
EDM_SEED = 7


def _components():
  m = MIXTURE
  return [(m["w"], m["m1"], m["s1"]), (1.0 - m["w"], m["m2"], m["s2"])]


def _posterior(x, means, variances):
  """Responsibilities r_k of the components N(means[k], variances[k]) at x (float64)."""
  logp = [np.log(w) - 0.5 * np.log(2 * np.pi * v) - 0.5 * (x - mu)**2 / v
          for (w, _, _), mu, v in zip(_components(), means, variances)]
  top = np.maximum(logp[0], logp[1])
  r = [np.exp(lp - top) for lp in logp]
  return [ri / (r[0] + r[1]) for ri in r]


def flow_velocity(x: np.ndarray, t: float) -> np.ndarray:
  """u*(x, t) = E[eps - x0 | x_t = x] on the linear path x_t = (1 - t) x0 + t eps."""
  x, t = np.asarray(x, np.float64), float(t)
  comps = _components()
  means = [(1 - t) * m for _, m, _ in comps]
  var = [(1 - t)**2 * s**2 + t**2 for _, _, s in comps]
  r = _posterior(x, means, var)
  u = 0.0
  for rk, (_, m, s), mu, v in zip(r, comps, means, var):
    eps = t * (x - mu) / v
    x0 = m + (1 - t) * s**2 * (x - mu) / v
    u = u + rk * (eps - x0)
  return u


def edm_denoiser(x: np.ndarray, sigma: float) -> np.ndarray:
  """D*(x; sigma) = E[x0 | x0 + sigma eps = x]."""
  x, sigma = np.asarray(x, np.float64), float(sigma)
  comps = _components()
  var = [s**2 + sigma**2 for _, _, s in comps]
  r = _posterior(x, [m for _, m, _ in comps], var)
  return sum(rk * (m + s**2 * (x - m) / v) for rk, (_, m, s), v in zip(r, comps, var))


def ode_grid(steps: int) -> np.ndarray:
  """u = linspace(1, 0, steps + 1) in float32, the unshifted grid of `jgen.diffusion.ode_times`."""
  return np.linspace(1.0, 0.0, steps + 1, dtype=np.float32)


def run_flow_match(x_T: np.ndarray, steps: int, shift: float, *, default_grid: bool = False
                   ) -> tuple[np.ndarray, np.ndarray]:
  """(final sample, the scheduler's sigmas) of FlowMatchEulerDiscreteScheduler(shift=shift)."""
  import diffusers  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel

  scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
  if default_grid:
    scheduler.set_timesteps(steps)
  else:
    scheduler.set_timesteps(sigmas=ode_grid(steps)[:-1].tolist())
  sigmas = scheduler.sigmas.numpy().copy()
  sample = torch.from_numpy(x_T.astype(np.float64))
  for i, t in enumerate(scheduler.timesteps):
    v = torch.from_numpy(flow_velocity(sample.numpy(), float(sigmas[i])))
    sample = scheduler.step(v, t, sample).prev_sample
  return sample.numpy().astype(np.float64), sigmas


def churn_noise(steps: int, seed: int = EDM_SEED) -> np.ndarray:
  """edm_sample's churn noise z_i, i < steps, from jax.random.key(seed): [steps, *SHAPE]."""
  import jax  # pylint: disable=import-outside-toplevel

  _, step_rng = jax.random.split(jax.random.key(seed))
  return np.stack([np.asarray(jax.random.normal(jax.random.fold_in(step_rng, i), SHAPE))
                   for i in range(steps)]).astype(np.float64)


def run_edm_euler(x_T: np.ndarray, steps: int, *, mode: str, z: np.ndarray | None = None,
                  s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"),
                  s_noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
  """(final sample, sigmas) of diffusers' EDMEulerScheduler, `mode` 'native' or 'alg2' (module
  docstring); the churn noise of step i is z[i]."""
  import diffusers  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  from diffusers.schedulers import scheduling_edm_euler  # pylint: disable=import-outside-toplevel

  if mode not in ("native", "alg2"):
    raise ValueError(mode)
  scheduler = diffusers.EDMEulerScheduler(**EDM)
  scheduler.set_timesteps(steps)
  sigmas = scheduler.sigmas.numpy().copy()
  drawn = []

  def randn(shape, dtype=None, **_):
    i = scheduler.step_index
    drawn.append(i)
    return torch.from_numpy(z[i]).to(dtype).reshape(shape)

  patched, scheduling_edm_euler.randn_tensor = scheduling_edm_euler.randn_tensor, randn
  try:
    sample = torch.from_numpy(x_T.astype(np.float64))
    for i, t in enumerate(scheduler.timesteps):
      sigma = float(sigmas[i])
      model_in = scheduler.scale_model_input(sample, t)
      x = model_in / scheduler.precondition_inputs(torch.ones((), dtype=torch.float64), sigma)
      sd2 = EDM["sigma_data"]**2
      c_skip, c_out = sd2 / (sigma**2 + sd2), sigma * sd2**0.5 / (sigma**2 + sd2)**0.5
      f = (torch.from_numpy(edm_denoiser(x.numpy(), sigma)) - c_skip * x) / c_out
      kwargs = dict(s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise)
      if mode == "alg2":
        gamma = min(s_churn / steps, 2**0.5 - 1) if s_tmin <= sigmas[i] <= s_tmax else 0.0
        sigma_hat = sigmas[i] * (gamma + 1)  # float32, as the scheduler computes it
        x_hat = sample.to(torch.float32).double()
        if gamma > 0:
          x_hat = x_hat + torch.from_numpy(z[i] * s_noise) * float(
              (sigma_hat**2 - sigmas[i]**2)**0.5)
        kwargs["pred_original_sample"] = torch.from_numpy(
            edm_denoiser(x_hat.numpy(), float(sigma_hat)))
      sample = scheduler.step(f, t, sample, **kwargs).prev_sample
  finally:
    scheduling_edm_euler.randn_tensor = patched
  expected = [i for i in range(steps) if s_churn > 0 and s_tmin <= sigmas[i] <= s_tmax]
  assert drawn == expected, (drawn, expected)
  return sample.numpy().astype(np.float64), sigmas


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", default="tests/diffusion/fixtures/continuous_reference.npz")
  args = p.parse_args()
  import diffusers  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(0)
  fm_x_T = rng.standard_normal(SHAPE)
  edm_x_T = EDM["sigma_max"] * rng.standard_normal(SHAPE)
  out = {"fm_x_T": fm_x_T, "edm_x_T": edm_x_T, "edm_seed": np.array(EDM_SEED),
         "diffusers_version": np.array(diffusers.__version__),
         "torch_version": np.array(torch.__version__), "jax_version": np.array(jax.__version__),
         **{f"mixture_{k}": np.array(v) for k, v in MIXTURE.items()},
         **{f"edm_{k}": np.array(v) for k, v in {**EDM, **EDM_CHURN}.items()}}
  for shift in FM_SHIFTS:
    for steps in FM_STEPS:
      key = f"{shift:g}_{steps}"
      out[f"fm_{key}"], out[f"fm_sigmas_{key}"] = run_flow_match(fm_x_T, steps, shift)
      _, out[f"fm_default_sigmas_{key}"] = run_flow_match(fm_x_T, steps, shift,
                                                          default_grid=True)
      print(f"flow match shift {shift:g}, {steps} steps: mean {out[f'fm_{key}'].mean():+.5f}")
  for steps in EDM_STEPS:
    out[f"edm_{steps}"], out[f"edm_sigmas_{steps}"] = run_edm_euler(edm_x_T, steps,
                                                                     mode="native")
    alg2, _ = run_edm_euler(edm_x_T, steps, mode="alg2")
    assert np.abs(alg2 - out[f"edm_{steps}"]).max() < 1e-5, "alg2 != native without churn"
    print(f"EDM Euler {steps} steps: mean {out[f'edm_{steps}'].mean():+.5f}")
  for steps in EDM_CHURN_STEPS:
    z = churn_noise(steps)
    out[f"edm_z_{steps}"] = z
    for mode in ("alg2", "native"):
      out[f"edm_churn_{mode}_{steps}"], _ = run_edm_euler(edm_x_T, steps, mode=mode, z=z,
                                                          **EDM_CHURN)
    gap = np.abs(out[f"edm_churn_alg2_{steps}"] - out[f"edm_churn_native_{steps}"]).max()
    print(f"EDM Euler churn {steps} steps: mean {out[f'edm_churn_alg2_{steps}'].mean():+.5f}, "
          f"max |alg2 - native| {gap:.3g}")
  np.savez_compressed(args.out, **out)
  print("wrote", args.out)


if __name__ == "__main__":
  main()
