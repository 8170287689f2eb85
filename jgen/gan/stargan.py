"""StarGAN (Choi et al. 2018): one generator translating between K-attribute domains.
`method = "gan.stargan"`.

With x a real image, c_org in {0, 1}^K its domain, c_trg a sampled target domain, D's source
head D_src (per-patch scores, averaged) and class head D_cls (K logits):

    L_D = E[D_src(G(x, c_trg))] - E[D_src(x)] + lambda_cls L_cls(D_cls(x), c_org)
          + lambda_gp E[(||grad_xhat sum_patches D_src(x_hat)|| - 1)^2]
    L_G = -E[D_src(G(x, c_trg))] + lambda_cls L_cls(D_cls(G(x, c_trg)), c_trg)
          + lambda_rec E|x - G(G(x, c_trg), c_org)| + lambda_id E|x - G(x, c_org)|

    L_cls(l, c) = E_b sum_k [-c_k log sigmoid(l_k) - (1 - c_k) log(1 - sigmoid(l_k))]

(multi-label binary cross entropy, summed over attributes, mean over the batch; the
reconstruction goes back to the *original* domain c_org). Paper values: lambda_cls = 1,
lambda_rec = 10, lambda_gp = 10, n_critic = 5, Adam(1e-4, 0.5, 0.999), linear decay of the
learning rate to 0 over the last half of the run, and no identity term (lambda_id = 0).

The identity term (`lambda_id` > 0, not in the paper) is CycleGAN's identity loss in StarGAN's
form, the source domain as the target. Nothing else in L_G says where the content must stay:
the reconstruction asks only that G(., c_org) undo G(., c_trg), which a private invertible
code for each domain satisfies as well as the domain's true transform (the paper relies on
the convolutional generator's locality for the rest). `benchmarks/stargan_inverse.py`
measures which of the two a trained G learned; docs/families/image_to_image.md has the
digits figures with and without the term.

The PatchNCE term (`lambda_nce` > 0, not in the paper: CUT's content loss, Park et al. 2020,
`jgen.gan.patch_nce`) adds lambda_nce L_PatchNCE to L_G, with G's own encoder as the feature
extractor as in CUT: the keys are the encoder features of the forward pass G(x, c_trg) at
`nce_layers` (the source x), the queries those of the way back G(G(x, c_trg), c_org) (the
translation), so the term needs no extra G pass (`nce_query = "target"`: those of
G(G(x, c_trg), c_trg) instead, the encoder that read the source, one more pass). Each patch of
the translation must identify the source's patch at the same place among the source's other
patches: a translation that recodes the content elsewhere (what the cycle alone allows) pays
for it. A small MLP head per
layer (`nce_head`, CUT's F) trains with G's optimizer in G's update. It asks for a
correspondence in place, so it suits appearance changes (inversion, strokes), not geometric
ones (a rotation moves every patch).

The gradient penalty follows the official code: the gradient of the sum of D's patch scores
(`jgen.gan.updates.gradient_penalty`), while the adversarial terms average them.

Composition (`jgen.gan.updates`): one loop step is `n_critic` critic `updates.update`s (each with
the `gradient_penalty` regularizer on D's source head) on chunks of the batch, then one
generator `update` (counting `state.step`) on the last chunk, as in the official code where G
steps after every n_critic-th critic iteration on that iteration's batch. The paper's 200k
"iterations" are critic iterations: 40k loop steps at n_critic = 5.

Domains, two kinds of data:

* synthetic (`domains` = transform names of `jgen.gan.domains`, the digits task): the batch's
  `image` is the clean image; every example is put in a random domain c_org (uniform over
  {0, 1}^K) on the fly, so the true translation to any domain is known:
  `domains.apply_domain(clean, c_trg)`;
* attributes (`attribute_indices`, CelebA): c_org = `batch["attributes"][:, indices]`.

Target domains are drawn per example: `target_sampling = "uniform"` over the rows of
`targets` (the translation table) or `"permute"` (the official code: c_org of a random
permutation of the batch, i.e. the data's attribute frequencies). `targets` is every domain
{0, 1}^K, except that attributes of an `exclusive` group (hair colours) take exactly one of
its members: on CelebA's five attributes 3 x 2 x 2 = 12 target domains.

Translation (`Translates`): `translation_names` are the `targets` rows' names ('clean',
'inverted', 'thick+rot90', ...; all 2^K for synthetic domains). `translation_inputs(batch)`
gives the clean image as `source` (synthetic: the clean domain, so that no randomness is
needed) with its true translations as `target`, or the real image (attributes). The EMA of G
(`ema_decay` > 0; not in the paper) is what `translate` and `evaluate` use.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jgen.gan import domains as domains_lib
from jgen.gan.adversarial import discriminator_optim, split_critic_batches
from jgen.gan import updates
from jgen.gan.patch_nce import PatchNCEHead, patch_nce_loss
from jgen.nn.dtypes import compute_dtype
from jgen.nn.stargan import (ENCODER_COLLECTION, StarGANDiscriminator, StarGANGenerator,
                             encoder_layers)
from jgen.ops.image import psnr
from jgen.train.optim import make_optimizer
from jgen.train.state import EmaSpec, TrainState, per_network

PyTree = Any
Metrics = dict[str, jax.Array]

__all__ = ["StarGAN", "classification_loss", "make_method",
           "reconstruction_loss", "target_table"]

TARGET_SAMPLING = ("uniform", "permute")
NCE_QUERIES = ("way_back", "target")


def classification_loss(logits: jax.Array, c: jax.Array) -> jax.Array:
  """Multi-label BCE, E_b sum_k BCE(sigmoid(logits_bk), c_bk) (stable: softplus form)."""
  per = jnp.maximum(logits, 0.0) - logits * c + jnp.log1p(jnp.exp(-jnp.abs(logits)))
  return jnp.mean(jnp.sum(per, axis=-1))


def reconstruction_loss(x: jax.Array, rec: jax.Array) -> jax.Array:
  """E|x - rec| over every pixel and channel."""
  return jnp.mean(jnp.abs(x - rec))


def target_table(names: Sequence[str], exclusive: Sequence[Sequence[int]] = ()
                 ) -> np.ndarray:
  """The target domains, float32 `[D, K]`: every vector of {0, 1}^K in which each exclusive
  group has exactly one attribute set (all 2^K without groups, in `domains.all_domains`
  order).

  Raises:
    ValueError: a group index out of range, or an attribute in two groups.
  """
  k = len(names)
  flat = [i for g in exclusive for i in g]
  if any(not 0 <= i < k for i in flat) or len(set(flat)) != len(flat):
    raise ValueError(f"exclusive groups {exclusive} must be disjoint indices into {k} "
                     f"attributes {tuple(names)}")
  rows = domains_lib.all_domains(k)
  keep = [all(row[list(g)].sum() == 1 for g in exclusive) for row in rows]
  return rows[np.asarray(keep, bool)]


def _attribute_apply(module: nn.Module):
  """`(params, model_state, x, conditions, *, train) -> (G(x, c), model_state)` with
  c = `conditions["attributes"]` (the networks have no other collections)."""

  def apply(params, model_state, x, conditions, *, train: bool):
    return module.apply({"params": params}, x, conditions["attributes"], train=train), model_state

  return apply


def _head_apply(module: nn.Module, head: int):
  """D's source (0) or class (1) head as an apply function."""

  def apply(params, model_state, x, conditions=None, *, train: bool):
    del conditions
    return module.apply({"params": params}, x, train=train)[head], model_state

  return apply


@dataclasses.dataclass(frozen=True, eq=False)
class StarGAN:
  """StarGAN as a method of the loop (see the module docstring); every function is pure.

  Attributes:
    generator: `G(x, c, *, train) -> images` (`StarGANGenerator`).
    discriminator: `D(x, *, train) -> (src [B, ...], cls [B, K])` (`StarGANDiscriminator`).
    tx_g, tx_d: the networks' optimizers.
    attribute_names: the K attribute names.
    synthetic: build domains with `jgen.gan.domains` (attribute_names are transforms);
      else read `batch["attributes"][:, attribute_indices]`.
    attribute_indices: columns of `batch["attributes"]` (attributes mode).
    exclusive: groups of attribute indices of which targets set exactly one.
    target_sampling: 'uniform' over `targets` or 'permute' the batch's c_org.
    n_critic, lambda_gp, lambda_cls, lambda_rec: the paper's 5, 10, 1, 10.
    lambda_id: weight of the identity term E|x - G(x, c_org)| (CycleGAN's identity loss with
      the source domain as target; 0, the paper: no term and no extra G pass).
    lambda_nce: weight of the PatchNCE content term (0: none, the paper; see the module
      docstring).
    nce_layers: G's encoder features it compares (`jgen.nn.stargan.encoder_layers` names).
    nce_tau, nce_patches, nce_features: its temperature, locations per layer and head width
      (CUT's 0.07, 256, 256).
    nce_query: the translation's features: 'way_back' (the encoder of G(fake, c_org), no extra
      pass) or 'target' (of G(fake, c_trg): the encoder that read the source, CUT's form, one
      more G pass).
    ema_decay, ema_warmup: EMA of G used by translate / evaluate (0: none, the paper).
  """

  generator: nn.Module
  discriminator: nn.Module
  tx_g: optax.GradientTransformation
  tx_d: optax.GradientTransformation
  attribute_names: tuple[str, ...]
  synthetic: bool = True
  attribute_indices: tuple[int, ...] = ()
  exclusive: tuple[tuple[int, ...], ...] = ()
  target_sampling: str = "uniform"
  n_critic: int = 5
  lambda_gp: float = 10.0
  lambda_cls: float = 1.0
  lambda_rec: float = 10.0
  lambda_id: float = 0.0
  lambda_nce: float = 0.0
  nce_layers: tuple[str, ...] = ()
  nce_tau: float = 0.07
  nce_patches: int = 256
  nce_features: int = 256
  nce_query: str = "way_back"
  ema_decay: float = 0.0
  ema_warmup: bool = True

  def __post_init__(self):
    k = len(self.attribute_names)
    if self.synthetic:
      domains_lib.check_names(self.attribute_names)
    elif len(self.attribute_indices) != k:
      raise ValueError(f"attribute_indices {self.attribute_indices} must name one column of "
                       f"batch['attributes'] per attribute {self.attribute_names}")
    if self.target_sampling not in TARGET_SAMPLING:
      raise ValueError(f"unknown target_sampling {self.target_sampling!r}; choose one of "
                       f"{TARGET_SAMPLING}")
    if self.n_critic < 1:
      raise ValueError(f"n_critic must be >= 1, got {self.n_critic}")
    if self.lambda_id < 0:
      raise ValueError(f"lambda_id must be >= 0 (0: no identity term), got {self.lambda_id}")
    if self.lambda_gp <= 0:
      raise ValueError(f"StarGAN's WGAN-GP critic needs lambda_gp > 0 (10), got "
                       f"{self.lambda_gp}")
    if self.lambda_nce < 0:
      raise ValueError(f"lambda_nce must be >= 0 (0: no PatchNCE term), got {self.lambda_nce}")
    if self.lambda_nce:
      known = encoder_layers(self.generator.n_down, self.generator.n_blocks)
      if not self.nce_layers or set(self.nce_layers) - set(known):
        raise ValueError(f"lambda_nce > 0 needs nce_layers, a non-empty subset of G's encoder "
                         f"features {known}; got {self.nce_layers}")
      if self.nce_query not in NCE_QUERIES:
        raise ValueError(f"unknown nce_query {self.nce_query!r}; choose one of {NCE_QUERIES}")
      if self.nce_tau <= 0 or self.nce_patches < 1 or self.nce_features < 1:
        raise ValueError(f"PatchNCE needs nce_tau > 0, nce_patches >= 1 and nce_features >= "
                         f"1, got {self.nce_tau}, {self.nce_patches}, {self.nce_features}")
    target_table(self.attribute_names, self.exclusive)  # validates the groups

  # ------------------------------------------------------------------ domains

  @property
  def num_attributes(self) -> int:
    return len(self.attribute_names)

  @property
  def targets(self) -> np.ndarray:
    """The translation table, float32 `[D, K]`."""
    return target_table(self.attribute_names, self.exclusive)

  @property
  def translation_names(self) -> tuple[str, ...]:
    return tuple(domains_lib.domain_name(row, self.attribute_names) for row in self.targets)

  def real_domains(self, batch: dict[str, jax.Array], rng: jax.Array
                   ) -> tuple[jax.Array, jax.Array]:
    """`(x_real, c_org)` of a batch: synthetic, the clean `image` put in uniform random
    domains; attributes, the image and its selected attribute columns."""
    images = batch["image"]
    if self.synthetic:
      table = jnp.asarray(domains_lib.all_domains(self.num_attributes))
      c_org = table[jax.random.randint(rng, (images.shape[0],), 0, table.shape[0])]
      return domains_lib.apply_domain(images, c_org, self.attribute_names), c_org
    if "attributes" not in batch:
      raise ValueError("StarGAN with attribute_indices reads batch['attributes'] (tfds "
                       "celeb_a's 40 flags); this data source has fields "
                       f"{sorted(batch)}. For images without attributes use synthetic "
                       "domains (gan.domains).")
    attrs = batch["attributes"]
    return images, attrs[:, jnp.asarray(self.attribute_indices)].astype(jnp.float32)

  def sample_targets(self, rng: jax.Array, c_org: jax.Array) -> jax.Array:
    """Target domains `[B, K]`, one per example (`target_sampling`)."""
    if self.target_sampling == "permute":
      return jax.random.permutation(rng, c_org, axis=0)
    table = jnp.asarray(self.targets)
    return table[jax.random.randint(rng, (c_org.shape[0],), 0, table.shape[0])]

  @property
  def sample_tag(self) -> str:
    """File-name tag of the translations: 'stargan_ema' with an EMA of G, else 'stargan'."""
    return "stargan_ema" if self.ema_decay else "stargan"

  # ------------------------------------------------------------------ networks and losses

  @property
  def g_apply(self) -> updates.ApplyFn:
    return _attribute_apply(self.generator)

  @property
  def d_src_apply(self) -> updates.ApplyFn:
    return _head_apply(self.discriminator, 0)

  @property
  def nce_head(self) -> PatchNCEHead:
    return PatchNCEHead(features=self.nce_features)

  @property
  def g_networks(self) -> tuple[str, ...]:
    """The networks of the generator update: G, and the PatchNCE head when it is on."""
    return ("generator", "nce_head") if self.lambda_nce else ("generator",)

  def encode(self, g_params: PyTree, x: jax.Array, c: jax.Array
             ) -> tuple[jax.Array, list[jax.Array]]:
    """`(G(x, c), [G's encoder features at each of nce_layers])` (training mode)."""
    y, sown = self.generator.apply({"params": g_params}, x, c, train=True,
                                   mutable=[ENCODER_COLLECTION])
    return y, [sown[ENCODER_COLLECTION][name][0] for name in self.nce_layers]

  def generate(self, g_params: PyTree, x: jax.Array, c: jax.Array) -> jax.Array:
    """G(x, c) in inference mode."""
    return self.g_apply(g_params, {}, x, {"attributes": c}, train=False)[0]

  def discriminate(self, d_params: PyTree, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`(src, cls)` of D."""
    return self.discriminator.apply({"params": d_params}, x, train=True)

  def critic_loss(self, params: PyTree, model_state: PyTree, x_real: jax.Array,
                  c_org: jax.Array, fake: jax.Array) -> tuple[jax.Array, tuple[PyTree, Metrics]]:
    """L_D without the penalty (the update's regularizer adds it): the Wasserstein terms of
    real vs (constant) fake images and lambda_cls L_cls(D_cls(x_real), c_org)."""
    src_real, cls_real = self.discriminate(params["discriminator"], x_real)
    src_fake, _ = self.discriminate(params["discriminator"], jax.lax.stop_gradient(fake))
    adv = jnp.mean(src_fake) - jnp.mean(src_real)
    cls = classification_loss(cls_real, c_org)
    acc = jnp.mean(((cls_real > 0) == (c_org > 0.5)).astype(jnp.float32))
    metrics = {"d_loss": adv, "d_cls": cls, "d_cls_acc": acc, "wasserstein": -adv}
    return adv + self.lambda_cls * cls, (model_state, metrics)

  def generator_loss(self, params: PyTree, model_state: PyTree, x_real: jax.Array,
                     c_org: jax.Array, c_trg: jax.Array, rng: jax.Array | None = None
                     ) -> tuple[jax.Array, tuple[PyTree, Metrics]]:
    """L_G: adversarial, lambda_cls L_cls(D_cls(G(x, c_trg)), c_trg), lambda_rec
    E|x - G(G(x, c_trg), c_org)|, when lambda_id > 0 lambda_id E|x - G(x, c_org)| and, when
    lambda_nce > 0, lambda_nce PatchNCE(source: G(x, c_trg)'s encoder, translation:
    G(fake, c_org)'s encoder) with `rng` drawing its patch locations."""
    g = params["generator"]
    if self.lambda_nce:
      fake, source_features = self.encode(g, x_real, c_trg)
    else:
      fake, _ = self.g_apply(g, model_state["generator"], x_real, {"attributes": c_trg},
                             train=True)
    src_fake, cls_fake = self.discriminate(params["discriminator"], fake)
    if self.lambda_nce and self.nce_query == "way_back":
      rec, fake_features = self.encode(g, fake, c_org)
    else:
      rec, _ = self.g_apply(g, model_state["generator"], fake, {"attributes": c_org},
                            train=True)
    adv = -jnp.mean(src_fake)
    cls = classification_loss(cls_fake, c_trg)
    rec_l1 = reconstruction_loss(x_real, rec)
    total = adv + self.lambda_cls * cls + self.lambda_rec * rec_l1
    metrics = {"g_loss": adv, "g_cls": cls, "g_rec": rec_l1}
    if self.lambda_nce:
      if rng is None:
        raise ValueError("the PatchNCE term draws patch locations: pass rng")
      if self.nce_query == "target":
        _, fake_features = self.encode(g, fake, c_trg)
      metrics["g_nce"] = patch_nce_loss(
          self.nce_head, params["nce_head"], source_features, fake_features, rng,
          num_patches=self.nce_patches, tau=self.nce_tau)
      total = total + self.lambda_nce * metrics["g_nce"]
    if self.lambda_id:
      same, _ = self.g_apply(g, model_state["generator"], x_real, {"attributes": c_org},
                             train=True)
      metrics["g_id"] = reconstruction_loss(x_real, same)
      total = total + self.lambda_id * metrics["g_id"]
    return total, (model_state, metrics)

  # ------------------------------------------------------------------ the loop's contract

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
    g_rng, d_rng, state_rng = jax.random.split(rng, 3)
    x = batch["image"][:1]
    c = jnp.zeros((1, self.num_attributes), jnp.float32)
    params = {"generator": self.generator.init(g_rng, x, c, train=False)["params"],
              "discriminator": self.discriminator.init(d_rng, x, train=False)["params"]}
    txs = {"generator": self.tx_g, "discriminator": self.tx_d}
    model_state = {"generator": {}, "discriminator": {}}
    if self.lambda_nce:  # CUT's head F, trained with G's optimizer
      _, features = self.encode(params["generator"], x, c)
      locations = [jnp.arange(f.shape[1] * f.shape[2]) for f in features]
      params["nce_head"] = self.nce_head.init(jax.random.fold_in(g_rng, 1), features,
                                              locations)["params"]
      txs["nce_head"], model_state["nce_head"] = self.tx_g, {}
    emas = ((EmaSpec("ema", self.ema_decay, self.ema_warmup, "generator/.*"),)
            if self.ema_decay else ())
    return TrainState.create(params=params, tx=per_network(txs), rng=state_rng, emas=emas,
                             model_state=model_state)

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                 ) -> tuple[TrainState, Metrics]:
    """`n_critic` critic updates on chunks of the batch, then one generator update."""
    n = self.n_critic
    x_real, c_org = self.real_domains(batch, jax.random.fold_in(rng, n + 2))
    c_trg = self.sample_targets(jax.random.fold_in(rng, n + 3), c_org)
    xs, cos, cts = (split_critic_batches(a, n) for a in (x_real, c_org, c_trg))
    gp = (updates.gradient_penalty(self.d_src_apply, weight=self.lambda_gp),)
    g_params = state.model_params["generator"]

    def critic_step(state, k):
      fake = self.generate(g_params, xs[k], cts[k])
      loss = lambda p, ms, r: self.critic_loss(p, ms, xs[k], cos[k], fake)
      state, m = updates.update(state, loss, networks="discriminator",
                                rng=jax.random.fold_in(rng, k), step=state.step * n + k,
                                inputs={"real": xs[k], "fake": fake}, regularizers=gp)
      m["d_grad_norm"] = m.pop("grad_norm")
      return state, m

    # Unrolled: XLA:CPU runs convolutions inside a while loop far slower.
    state, d_metrics = jax.lax.scan(critic_step, state, jnp.arange(n), unroll=True)
    d_metrics = jax.tree.map(jnp.mean, d_metrics)
    last = n - 1
    g_loss = lambda p, ms, r: self.generator_loss(p, ms, xs[last], cos[last], cts[last], r)
    state, g_metrics = updates.update(state, g_loss, networks=self.g_networks,
                                      rng=jax.random.fold_in(rng, n), step=state.step,
                                      count_step=True)
    g_metrics["g_grad_norm"] = g_metrics.pop("grad_norm")
    return state, {**d_metrics, **g_metrics, "loss": d_metrics["d_loss"]}

  def translation_inputs(self, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """`source` (synthetic: the clean image, in the clean domain; attributes: the image),
    `target` `[B, D, ...]` (synthetic only: the clean image in every target domain) and
    `label` when the batch has one."""
    source = batch["image"]
    out = {"source": source}
    if self.synthetic:
      targets = jnp.asarray(self.targets)
      b, d = source.shape[0], targets.shape[0]
      tiled = jnp.repeat(source, d, axis=0)
      true = domains_lib.apply_domain(tiled, jnp.tile(targets, (b, 1)), self.attribute_names)
      out["target"] = true.reshape(b, d, *source.shape[1:])
    if "label" in batch:
      out["label"] = batch["label"]
    return out

  def _translate_all(self, g_params: PyTree, source: jax.Array) -> jax.Array:
    targets = jnp.asarray(self.targets)
    b, d = source.shape[0], targets.shape[0]
    out = self.generate(g_params, jnp.repeat(source, d, axis=0), jnp.tile(targets, (b, 1)))
    return out.reshape(b, d, *out.shape[1:])

  def translate(self, state: TrainState, rng: jax.Array, source: jax.Array) -> jax.Array:
    """`[B, H, W, C] -> [B, D, H, W, C]`: G_ema(source, targets[d]) for every target d."""
    del rng  # G is deterministic
    return self._translate_all(state.ema_params["generator"], source)

  def evaluate(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
               ) -> Metrics:
    """Held-out metrics of G_ema (images taken to [0, 1]).

    Every source in a random domain c_org (synthetic) or its own (attributes) is translated
    to every target domain d. Synthetic: `l1_<d>`, `psnr_<d>` against the true counterpart
    and their means `l1`, `psnr` (`loss` = `l1`), with `copy_l1` (the source itself as the
    translation: the baseline to beat). Both: `rec_l1` (E|x - G(G(x, d), c_org)|, over all d),
    `cls_acc` (D's attribute accuracy on the translations w.r.t. their targets),
    `real_cls_acc` (on the real images) and `wasserstein` (mean D_src of real minus fake).
    """
    g = state.ema_params["generator"]
    d_params = state.model_params["discriminator"]
    x_real, c_org = self.real_domains(batch, rng)
    targets = jnp.asarray(self.targets)
    b, d = x_real.shape[0], targets.shape[0]
    xs, cos = jnp.repeat(x_real, d, axis=0), jnp.repeat(c_org, d, axis=0)
    cts = jnp.tile(targets, (b, 1))
    fake = self.generate(g, xs, cts)
    rec = self.generate(g, fake, cos)
    src_real, cls_real = self.discriminate(d_params, x_real)
    src_fake, cls_fake = self.discriminate(d_params, fake)
    acc = lambda logits, c: jnp.mean(((logits > 0) == (c > 0.5)).astype(jnp.float32))
    metrics = {"rec_l1": reconstruction_loss(xs, rec) / 2.0, "cls_acc": acc(cls_fake, cts),
               "real_cls_acc": acc(cls_real, c_org),
               "wasserstein": jnp.mean(src_real) - jnp.mean(src_fake)}
    if not self.synthetic:
      metrics["loss"] = metrics["rec_l1"]
      return metrics
    true = domains_lib.apply_domain(jnp.repeat(batch["image"], d, axis=0), cts,
                                    self.attribute_names)
    per = lambda a: a.reshape(b, d, *a.shape[1:])
    fake_d, true_d, src_d = per(fake), per(true), per(xs)
    l1s, psnrs = [], []
    for j, name in enumerate(self.translation_names):
      l1s.append(jnp.mean(jnp.abs(fake_d[:, j] - true_d[:, j])) / 2.0)
      psnrs.append(jnp.mean(psnr(fake_d[:, j], true_d[:, j])))
      metrics[f"l1_{name}"], metrics[f"psnr_{name}"] = l1s[-1], psnrs[-1]
    metrics["l1"] = jnp.mean(jnp.stack(l1s))
    metrics["psnr"] = jnp.mean(jnp.stack(psnrs))
    metrics["copy_l1"] = jnp.mean(jnp.abs(src_d - true_d)) / 2.0
    metrics["loss"] = metrics["l1"]
    return metrics


def _optimizer(optim: Any, *, total: int, per_step: int) -> optax.GradientTransformation:
  """`make_optimizer(optim)` over the network's own update count: `per_step` updates per loop
  step (n_critic for the critic), so a 'linear' schedule (`optim.decay_from`) decays both
  networks over the same loop steps."""
  return make_optimizer({k: v for k, v in optim.items() if k != "rules"},
                        total_steps=total * per_step)


def make_method(config: Any) -> StarGAN:
  """Translates a config (`model`, `gan`, `optim` for G, `optim_d` over it for D, `train`,
  `data`) into a `StarGAN` (fields in `experiments/translation/base_stargan.py`)."""
  m, g, d = config.model, config.gan, config.data
  synthetic = bool(g.domains)
  names = tuple(g.domains) if synthetic else tuple(g.attributes)
  if synthetic and g.attributes:
    raise ValueError("set either gan.domains (synthetic transforms of jgen.gan.domains) or "
                     "gan.attributes with gan.attribute_indices (tfds attributes), not both")
  dtype = compute_dtype(m.dtype)
  k = len(names)
  n_layers = int(math.log2(d.image_size)) - int(math.log2(m.cls_kernel))
  if 2 ** int(math.log2(d.image_size)) != d.image_size or n_layers < 1:
    raise ValueError(f"StarGAN needs a power-of-two data.image_size above model.cls_kernel "
                     f"({m.cls_kernel}), got {d.image_size}")
  generator = StarGANGenerator(out_channels=d.channels, ngf=m.g_features, n_down=m.g_down,
                               n_blocks=m.g_blocks, dtype=dtype)
  discriminator = StarGANDiscriminator(num_attributes=k, ndf=m.d_features, n_layers=n_layers,
                                       dtype=dtype)
  total = config.train.num_steps
  return StarGAN(
      generator=generator, discriminator=discriminator,
      tx_g=_optimizer(config.optim, total=total, per_step=1),
      tx_d=_optimizer(discriminator_optim(config), total=total, per_step=g.n_critic),
      attribute_names=names, synthetic=synthetic,
      attribute_indices=tuple(int(i) for i in g.attribute_indices),
      exclusive=tuple(tuple(int(i) for i in grp) for grp in g.exclusive),
      target_sampling=g.target_sampling, n_critic=g.n_critic, lambda_gp=g.lambda_gp,
      lambda_cls=g.lambda_cls, lambda_rec=g.lambda_rec, lambda_id=g.lambda_id,
      lambda_nce=g.lambda_nce, nce_layers=tuple(g.nce_layers), nce_tau=g.nce_tau,
      nce_patches=g.nce_patches, nce_features=g.nce_features, nce_query=g.nce_query,
      ema_decay=config.train.ema_decay, ema_warmup=config.train.ema_warmup)
