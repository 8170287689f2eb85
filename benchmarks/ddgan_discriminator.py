"""Is a trained DDGAN's discriminator still discriminating? Its scores per step, and a probe.

  python benchmarks/ddgan_discriminator.py \
      --run "experiments/gan/ddgan_digits.py=/tmp/ddgan_digits"
  python benchmarks/ddgan_discriminator.py --probe_steps 300 \
      --run "experiments/gan/ddgan_digits.py=/tmp/ddgan_digits@optim_d.lr=2.5e-4"

`--run CONFIG=WORKDIR[@KEY=VALUE;...]` as in `gan_digits.py` (one run). For each denoising step
t the run's discriminator scores `--num` real pairs (x_{t-1}, x_t) of train digits (at most
all of them) and as many fake pairs (x_{t-1} ~ q(. | x_t, G(x_t, t, z)), trained and EMA
generator); the table gives the mean and spread of the logits and the accuracy of their sign.
A discriminator at chance with logits near 0 gives the generator no signal.

`--probe_steps N` then trains the discriminator alone (G frozen: the trained one; the run's D
and a freshly initialised one; Adam at `optim_d`'s rate and betas, non-saturating loss, batch
64) on the pairs of t = 0 and 1 for N steps and prints its loss / accuracy every N/6 steps:
whether it *can* tell the frozen G's fakes from real pairs, i.e. whether the training dynamics
rather than the discriminator's capacity kept it at chance.
"""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gan_digits import split_images  # noqa: E402  (benchmarks/ siblings)
from run_specs import load_config, parse_run  # noqa: E402

from jgen.gan import losses  # noqa: E402
from jgen.gan.adversarial import discriminator_optim  # noqa: E402
from jgen.gan.ddgan import q_sample_pair  # noqa: E402
from jgen.train.inference import restore_for_inference  # noqa: E402

# `--run`, `--num` (pairs per t) and `--seed` are gan_digits' flags, defined on its import.
FLAGS = flags.FLAGS
flags.DEFINE_integer("probe_steps", 0, "Steps of the frozen-G discriminator probe (0: none).")


def _pairs(method, g_params, x0, t, rng):
  """(real x_{t-1}, fake x_{t-1}, the conditions) for images `x0` at step `t`."""
  k1, k2, k3, k4 = jax.random.split(rng, 4)
  tt = jnp.full((x0.shape[0],), t, jnp.int32)
  x_prev, x_t = q_sample_pair(method.schedule, x0, tt, jax.random.normal(k1, x0.shape),
                              jax.random.normal(k2, x0.shape))
  cond = {"x_t": x_t, "t": tt, "noise": jax.random.normal(k3, x0.shape)}
  z = jax.random.normal(k4, (x0.shape[0], method.z_dim))
  fake, _ = method.denoiser_apply(g_params, {}, z, cond, train=False)
  return x_prev, fake, cond


def _scores(method, d_params, real, fake, cond, train=False):
  r, _ = method.d_apply(d_params, {}, real, cond, train=train)
  f, _ = method.d_apply(d_params, {}, fake, cond, train=train)
  return r, f


def main(argv):
  del argv
  if len(FLAGS.run) != 1:
    raise app.UsageError("give exactly one --run CONFIG=WORKDIR[@KEY=VALUE;...] of a gan.ddgan "
                         "run")
  spec, workdir, overrides = parse_run(FLAGS.run[0])
  config = load_config(spec, overrides)
  method, _, state = restore_for_inference(config, workdir)
  images = jnp.asarray(split_images(config, "train").astype(np.float32) / 127.5 - 1.0)
  x0 = images[:FLAGS.num]
  d_params = state.params["discriminator"]
  print(f"{FLAGS.run[0]}: step {int(state.step)}, {x0.shape[0]} real and fake pairs per t")
  print("| generator | t | real logits | fake logits | sign accuracy |")
  print("|---|---|---|---|---|")
  for name, g_params in (("trained", state.params["generator"]),
                         ("EMA", state.ema_params["generator"])):
    for t in range(method.num_steps):
      real, fake, cond = _pairs(method, g_params, x0, t,
                                jax.random.fold_in(jax.random.key(FLAGS.seed), t))
      r, f = (np.asarray(v) for v in _scores(method, d_params, real, fake, cond))
      acc = 0.5 * ((r > 0).mean() + (f < 0).mean())
      print(f"| {name} | {t} | {r.mean():+.3f} +- {r.std():.3f} | {f.mean():+.3f} +- "
            f"{f.std():.3f} | {acc:.3f} |")

  if not FLAGS.probe_steps:
    return
  opt = discriminator_optim(config)
  tx = optax.adam(opt["lr"], opt["b1"], opt["b2"])
  g_params = state.params["generator"]
  fresh = method.discriminator.init(jax.random.key(FLAGS.seed + 1), x0[:1], x0[:1],
                                    jnp.zeros((1,), jnp.int32), train=False)["params"]
  every = max(1, FLAGS.probe_steps // 6)
  print(f"\nfrozen-G probe: Adam({opt['lr']}, {opt['b1']}, {opt['b2']}), batch 64, loss / accuracy "
        f"every {every} steps")
  for name, init in (("run's D", d_params), ("fresh D", fresh)):
    for t in (0, 1):

      def loss_fn(p, real, fake, cond):
        r, f = _scores(method, p, real, fake, cond, train=True)
        loss = losses.discriminator_loss("non_saturating", r, f)  # the loop's D loss
        return loss, 0.5 * (jnp.mean(r > 0) + jnp.mean(f < 0))

      @jax.jit
      def step(p, o, rng, t=t, loss_fn=loss_fn):
        k_idx, k_pair = jax.random.split(rng)
        x = images[jax.random.randint(k_idx, (64,), 0, images.shape[0])]
        real, fake, cond = _pairs(method, g_params, x, t, k_pair)
        (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, real, fake, cond)
        updates, o = tx.update(grads, o, p)
        return optax.apply_updates(p, updates), o, loss, acc

      p, o, log = init, tx.init(init), []
      for i in range(FLAGS.probe_steps):
        p, o, loss, acc = step(p, o, jax.random.fold_in(jax.random.key(FLAGS.seed + 2), i))
        if (i + 1) % every == 0:
          log.append(f"{i + 1}: {float(loss):.3f} / {float(acc):.2f}")
      print(f"{name}, t = {t}: " + ", ".join(log))


if __name__ == "__main__":
  app.run(main)
