"""StarGAN's generator trained with paired supervision: can the network do the digits task?

  python benchmarks/stargan_supervised.py --steps 1500
  python benchmarks/stargan_supervised.py \
      --config "experiments/translation/stargan_digits.py@gan.domains=('inverted','thick')"

The synthetic digits domains (`jgen.gan.domains`) know every true translation, so StarGAN's
generator G(x, c) (the config's network, untouched) can be trained directly with
E|G(T_org(x), c_trg) - T_trg(x)| (x a clean train digit, T_org and T_trg its transforms into
uniform random source and target domains; Adam(1e-3), batch 16), no critic, no cycle. The
translations of the held-out digits are then scored like `benchmarks/translation_digits.py`
(L1, PSNR, content preserved and domain success by the cross-fitted (domain, digit) judge,
domain FID), per target domain too. If this G translates well and the adversarial one does
not, the network is able and StarGAN's unpaired objective (adversarial + domain
classification + cycle) is what picks another solution (docs/families/image_to_image.md).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from jgen.gan import domains as domains_lib
from jgen.gan.stargan import make_method
from jgen.metrics import networks
from jgen.metrics import translation as tm
from jgen.train import translations
from jgen.train.inputs import load_data
from run_specs import load_config

FLAGS = flags.FLAGS
flags.DEFINE_string("config", "experiments/translation/stargan_digits.py",
                    "CONFIG[:VARIANT][@KEY=VALUE;...] of a synthetic-domain StarGAN.")
flags.DEFINE_integer("steps", 1500, "Adam steps of the supervised generator.")
flags.DEFINE_integer("batch", 16, "Digits per step.")
flags.DEFINE_float("lr", 1e-3, "Adam learning rate.")
flags.DEFINE_integer("seed", 0, "Seed of the initialization and the batches.")


def main(argv):
  del argv
  spec, _, overrides = FLAGS.config.partition("@")
  config = load_config(spec, overrides)
  method = make_method(config)
  if not method.synthetic:
    raise app.UsageError(f"{spec}: supervision needs synthetic domains (gan.domains), whose "
                         "true translations are known")
  source = load_data(config, split=config.data.split)
  train = jnp.asarray(np.stack([source[i]["image"] for i in range(len(source))]), jnp.float32)
  train = train / 127.5 - 1.0
  g_params = method.init(jax.random.key(FLAGS.seed), {"image": train[:1]}).params["generator"]
  tx = optax.adam(FLAGS.lr)
  table = jnp.asarray(domains_lib.all_domains(method.num_attributes))
  names = method.attribute_names

  def loss_fn(g, clean, c_org, c_trg):
    x = domains_lib.apply_domain(clean, c_org, names)
    y = domains_lib.apply_domain(clean, c_trg, names)
    return jnp.mean(jnp.abs(method.generate(g, x, c_trg) - y))

  @jax.jit
  def step(g, opt, key):
    k_idx, k_org, k_trg = jax.random.split(key, 3)
    clean = train[jax.random.randint(k_idx, (FLAGS.batch,), 0, train.shape[0])]
    c_org, c_trg = (table[jax.random.randint(k, (FLAGS.batch,), 0, table.shape[0])]
                    for k in (k_org, k_trg))
    loss, grads = jax.value_and_grad(loss_fn)(g, clean, c_org, c_trg)
    updates, opt = tx.update(grads, opt, g)
    return optax.apply_updates(g, updates), opt, loss

  opt = tx.init(g_params)
  t0 = time.perf_counter()
  for i in range(FLAGS.steps):
    g_params, opt, loss = step(g_params, opt, jax.random.fold_in(jax.random.key(FLAGS.seed), i))
    if i % 500 == 0 or i == FLAGS.steps - 1:
      print(f"step {i}: L1 loss {float(loss):.4f}", flush=True)
  seconds = time.perf_counter() - t0

  inputs = translations.held_out_inputs(method, config, None)
  held_out = jnp.asarray(inputs["source"])
  translate = jax.jit(method._translate_all)  # pylint: disable=protected-access
  outputs = np.concatenate([np.asarray(translate(g_params, held_out[i:i + 64]))
                            for i in range(0, len(held_out), 64)])
  m = tm.translation_metrics(np.asarray(held_out), outputs, inputs["target"], inputs["label"],
                             feature_net=networks.load("domain:digits"))
  print(f"\n{FLAGS.steps} supervised steps in {seconds:.0f} s, {len(held_out)} held-out digits")
  print("| G | L1 (0..1) | PSNR (dB) | content preserved | domain success | judge accuracy (real)"
        " | domain FID |")
  print("|---|---|---|---|---|---|---|")
  print(f"| supervised | {m['l1']:.4f} | {m['psnr']:.2f} | {100 * m['content']:.1f}% | "
        f"{100 * m['domain_success']:.1f}% | {100 * m['judge_accuracy']:.1f}% | {m['fid']:.2f} |")
  print("\n| target domain | content preserved | domain success |")
  print("|---|---|---|")
  for d, name in enumerate(method.translation_names):
    print(f"| {name} | {100 * m[f'content/{d}']:.1f}% | {100 * m[f'domain_success/{d}']:.1f}% |")


if __name__ == "__main__":
  app.run(main)
