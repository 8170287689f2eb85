"""Perfusion (Tewel et al. 2023, key-locked rank-one editing) of Stable Diffusion:
`config.method = "diffusion.sd_perfusion"`, experiments/sd/finetune.py ``:kind=perfusion``.

The math is `jgen.diffusion.perfusion`'s (its module docstring): for a context vector x [D] of
the CLIP text encoder (what the U-Net's cross-attention reads), the concept's encoding i*, the
superordinate's encoding i_s, C^-1 the inverse uncentred covariance of the encoder's outputs,
alpha(x) = x^T C^-1 i* / (i*^T C^-1 i*) and the gate g(x) = sigmoid((alpha(x) - beta) / tau),
every cross-attention key and value projection ``attn2/to_k``, ``attn2/to_v`` of the U-Net
becomes

    K' = f_K(x - alpha i* + g i_s),        V' = f_V(x - alpha i* + g i_s) + g delta_l,

(`perfusion.perfusion_edit`): the key is locked to the superordinate's (``[V]`` attends where
"dog" would), the value moves by a learned offset delta_l [C_l] per layer l.

**Training** (rules ``(("token_offsets", 1.0), ("perfusion/.*", 1.0), (".*", "frozen"))``,
checked). The concept's word is Stable Diffusion's trained textual-inversion token
(``textual_inversion.train_token``, one vector): its row is the superordinate word's
(``textual_inversion.init_token``) plus the learned ``params["token_offsets"]``
(`StableDiffusion.context`), and the value offsets ``params["perfusion"]["values"]`` (zero at
the start) train beside it. Each step, i* is the mean of the encoder's outputs at the concept
token's positions over the caption templates ``text.captions`` ("a photo of a {}", ...),
recomputed from the current row (differentiable), and i_s the same mean over the captions with
the superordinate word (stop-gradient); the loss is Stable Diffusion's (`StableDiffusion
.loss_fn`) with the U-Net edited under the training gate (``perfusion.train_bias``,
``train_temperature``: 0.75, 0.1). C is estimated once, before training (`prepare`), over the
encoder's outputs at every position of the captions (with the superordinate word, as the
concept's start) and of ``perfusion.corpus_size`` random prompts of whole words of the
tokenizer's vocabulary, and kept as ``state.frozen["perfusion"]["c_inv"]``.

**Concept files** (`perfusion.Concept`: safetensors, a few kilobytes): ``python -m
jgen.cli.perfusion export --run WORKDIR --out FILE`` writes a run's trained concept (the token
row, i*, i_s, the value offsets). **Sampling** uses the
sampling gate (``perfusion.bias``, ``temperature``: 0.7, 0.15) on every context the U-Net sees
(the prompt's and the negative prompt's), with the run's own concept, or, when
``perfusion.concepts`` names files (``|``-separated), with exactly those concepts at once (a
run's own concept then comes in through its file): their words join the CLIP tokenizer and
their rows the token table as ``textual_inversion.file``'s do (`StableDiffusion.sample_frozen`
``token_rows``), and their i*, i_s and offsets are stacked (`perfusion.concept_arrays`). The
U-Net, text encoder and C^-1 of any Perfusion run of the same base serve every concept of it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jgen import errors
from jgen.diffusion import stable_diffusion as sd_lib
from jgen.diffusion.perfusion import (Concept, Gate, concept_arrays, input_covariance,
                                      load_concept, perfusion_edit, value_layers)
from jgen.train import init_from as init_from_lib
from jgen.train import rules as rules_lib
from jgen.train.state import TrainState

__all__ = ["PERFUSION", "SD_PERFUSION_RULES", "SDPerfusion", "make_method"]

PyTree = Any

PERFUSION = "perfusion"
FILES = "perfusion_concepts"   # the sampler's arrays of `perfusion.concepts` files
SD_PERFUSION_RULES = rules_lib.parse_rules((("token_offsets", 1.0), (f"{PERFUSION}/.*", 1.0),
                                            (".*", "frozen")))
_ENCODE_BATCH = 64


def _mean_at(context: jax.Array, where: jax.Array) -> jax.Array:
  """The mean of context [B, L, D] over the positions where `where` [B, L] is true."""
  mask = where.astype(context.dtype)[..., None]
  return jnp.sum(context * mask, axis=(0, 1)) / jnp.maximum(jnp.sum(mask), 1.0)


@dataclasses.dataclass(frozen=True, eq=False)
class SDPerfusion:
  """One Perfusion concept on a Stable Diffusion base (see the module docstring).

  Attributes:
    sd: the Stable Diffusion method with the concept's word as its trained token (and the
      words of `files` as sampler token rows).
    word: the concept's word (``textual_inversion.train_token``).
    superordinate: its superordinate word (``textual_inversion.init_token``).
    token_id: the word's token id.
    super_captions: int32 [T, L], ``sd.captions`` with the superordinate word for the concept.
    corpus: int32 [N, L], the prompts whose encodings estimate C (`super_captions` and random
      prompts of the vocabulary's words).
    train_gate, sample_gate: the gates in training and at sampling.
    files: the concepts of ``perfusion.concepts`` (sampling).
    text_load: the ``init_from`` load of the base's text encoder (to estimate C).
    c_inv: float32 [D, D] once `prepare` has estimated it.
  """

  sd: sd_lib.StableDiffusion
  word: str
  superordinate: str
  token_id: int
  super_captions: np.ndarray
  corpus: np.ndarray
  train_gate: Gate = Gate(0.75, 0.1)
  sample_gate: Gate = Gate(0.7, 0.15)
  files: tuple[Concept, ...] = ()
  text_load: init_from_lib.InitFrom | None = None
  c_inv: np.ndarray | None = None

  # ------------------------------------------------------------------ the abilities

  @property
  def num_classes(self) -> int:
    return self.sd.num_classes

  @property
  def train_init_ids(self) -> tuple[int, ...]:
    """The superordinate's id for the trained row (`jgen.export`'s ``--what=embedding``)."""
    return self.sd.train_init_ids

  @property
  def sample_frozen(self) -> dict[str, Any]:
    """Stable Diffusion's sampler arrays (the files' token rows) and the files' stacked i*,
    i_s and value offsets."""
    out = dict(self.sd.sample_frozen)
    if self.files:
      arrays = concept_arrays(self.files, np.zeros((), np.float32))
      out[FILES] = {k: v for k, v in arrays.items() if k != "c_inv"}
    return out

  def example_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    return self.sd.example_batch(batch_size)

  @property
  def sample_tag(self) -> str:
    g = self.sample_gate
    files = f"{len(self.files)}files_" if self.files else ""
    return f"perfusion_{files}b{g.bias:g}_t{g.temperature:g}_{self.sd.sample_tag}"

  # ------------------------------------------------------------------ covariance

  def estimate_c_inv(self, text_params: PyTree) -> np.ndarray:
    """C^-1 (float32 [D, D]) of the text encoder's outputs at every position of `corpus`."""
    encode = jax.jit(lambda p, t: self.sd.context({"text_encoder": p}, t))
    n = self.corpus.shape[0]
    pad = -n % _ENCODE_BATCH
    tokens = np.concatenate([self.corpus, np.repeat(self.corpus[:1], pad, axis=0)])
    outs = [np.asarray(encode(text_params, jnp.asarray(tokens[i:i + _ENCODE_BATCH])))
            for i in range(0, tokens.shape[0], _ENCODE_BATCH)]
    context = np.concatenate(outs)[:n]
    return np.linalg.inv(input_covariance(context)).astype(np.float32)

  def prepare(self, workdir: str) -> "SDPerfusion":
    """The method with C^-1 estimated from the base's text encoder (before training).

    Raises:
      ConfigError: concept or embedding files given for training, or no text-encoder load.
    """
    del workdir
    if self.files or "token_rows" in self.sd.extras:
      raise errors.ConfigError("perfusion.concepts and textual_inversion.file are sampling "
                               "options: clear them to train a Perfusion concept")
    if self.c_inv is not None:
      return self
    if self.text_load is None:
      raise errors.ConfigError("diffusion.sd_perfusion estimates C with the base's CLIP text "
                               "encoder: set --config.init_from.workdir to the converted "
                               "Stable Diffusion run")
    text, _ = init_from_lib.load(self.text_load)
    return dataclasses.replace(self, c_inv=self.estimate_c_inv(text))

  # ------------------------------------------------------------------ training

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
    """Stable Diffusion's state plus zero value offsets and C^-1 (identity before `prepare`)."""
    state = self.sd.init(rng, batch)
    values = {k: jnp.zeros((c,), jnp.float32)
              for k, c in value_layers(state.params["unet"]).items()}
    params = {**state.params,
              PERFUSION: {"values": traverse_util.unflatten_dict(values, sep="/")}}
    dim = self.sd.text_encoder.hidden_size
    c_inv = jnp.eye(dim, dtype=jnp.float32) if self.c_inv is None else jnp.asarray(self.c_inv)
    return TrainState.create(params=params, tx=self.sd.base.tx, rng=jax.random.fold_in(rng, 1),
                             ema_decay=self.sd.ema_decay,
                             frozen={**state.frozen, PERFUSION: {"c_inv": c_inv}})

  def edit_arrays(self, params: PyTree, frozen: PyTree) -> dict[str, Any]:
    """The `perfusion_edit` arrays of the trained concept (M = 1): i* of the current token
    row, i_s (stop-gradient), C^-1 and the value offsets."""
    captions = jnp.asarray(self.sd.captions)
    where = captions == self.token_id
    i_star = _mean_at(self.sd.context(frozen, captions, params), where)
    context = self.sd.context(frozen, jnp.asarray(self.super_captions))
    i_super = jax.lax.stop_gradient(_mean_at(context, where))
    values = traverse_util.flatten_dict(params[PERFUSION]["values"], sep="/")
    return {"i_star": i_star[None], "i_super": i_super[None],
            "c_inv": frozen[PERFUSION]["c_inv"], "values": {k: v[None] for k, v in values.items()}}

  def loss_fn(self, params: PyTree, frozen: PyTree, batch: dict[str, jax.Array],
              rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Stable Diffusion's loss (the concept's captions) with the U-Net edited."""
    arrays = self.edit_arrays(params, frozen)
    with perfusion_edit(arrays, self.train_gate):
      loss, metrics = self.sd.loss_fn(params, frozen, batch, rng)
    return loss, {**metrics, "i_star_norm": jnp.linalg.norm(arrays["i_star"])}

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    return state.gradient_step(lambda p, b, r: self.loss_fn(p, state.frozen, b, r), batch, rng)

  # ------------------------------------------------------------------ concepts, sampling

  def concept(self, params: PyTree, frozen: PyTree) -> Concept:
    """The trained concept of a state's parameters (pass the EMA for a file)."""
    arrays = jax.device_get(self.edit_arrays(params, frozen))
    table = np.asarray(frozen["text_encoder"]["token_embedding"]["embedding"])
    row = table[self.sd.train_init_ids[0]] + np.asarray(params["token_offsets"][0])
    return Concept(word=self.word, superordinate=self.superordinate,
                   embedding=row.astype(np.float32), i_star=np.asarray(arrays["i_star"][0]),
                   i_super=np.asarray(arrays["i_super"][0]),
                   values={k: np.asarray(v[0]) for k, v in arrays["values"].items()},
                   base=init_from_lib.fingerprint(jax.device_get(frozen["text_encoder"]))[:16])

  def sample_arrays(self, state: TrainState) -> dict[str, Any]:
    """The edit at sampling: the files' concepts (``state.frozen`` carries the
    `sample_frozen` arrays) or else the run's own (EMA)."""
    if self.files:
      return {**state.frozen[FILES], "c_inv": state.frozen[PERFUSION]["c_inv"]}
    return self.edit_arrays(state.ema_params, state.frozen)

  def sample_conditional(self, state: TrainState, rng: jax.Array,
                         conditions: dict[str, jax.Array], n: int) -> jax.Array:
    """`n` images of the prompts ``conditions["label"]``, the U-Net edited (sampling gate)."""
    with perfusion_edit(self.sample_arrays(state), self.sample_gate):
      return self.sd.sample_conditional(state, rng, conditions, n)

  def sample(self, state: TrainState, rng: jax.Array, n: int) -> jax.Array:
    labels = jnp.arange(n, dtype=jnp.int32) % self.num_classes
    return self.sample_conditional(state, rng, {"label": labels}, n)


def _check_rules(config: Any) -> None:
  rules = rules_lib.parse_rules(config.optim.rules)
  if rules != SD_PERFUSION_RULES:
    raise errors.ConfigError(
        "diffusion.sd_perfusion trains the concept's token offset and value offsets only: set "
        "--config.optim.rules=\"(('token_offsets', 1.0), ('perfusion/.*', 1.0), ('.*', "
        f"'frozen'))\" (got {rules})")


def _corpus(tokenizer: Any, size: int, max_words: int) -> np.ndarray:
  """int32 [size, L]: prompts of 1..max_words random whole words of the vocabulary (seed 0)."""
  words = sorted(k[:-4] for k in tokenizer.encoder
                 if k.endswith("</w>") and k[:-4].isascii() and k[:-4].isalpha())
  if not words or size == 0:
    return np.zeros((0, tokenizer.max_length), np.int32)
  rng = np.random.default_rng(0)
  prompts = [" ".join(rng.choice(words, size=rng.integers(1, max_words + 1)))
             for _ in range(size)]
  return tokenizer(prompts)


def make_method(config: Any) -> SDPerfusion:
  """Translates ``config`` (experiments/sd/finetune.py:kind=perfusion) into an `SDPerfusion`:
  Stable Diffusion's networks with ``textual_inversion.train_token`` / ``init_token`` as the
  concept's word and superordinate, and the ``perfusion`` block (``train_bias``,
  ``train_temperature``, ``bias``, ``temperature``, ``corpus_size``, ``concepts``).

  Raises:
    ConfigError: other rules, no single-vector trained token, captions without the token.
  """
  _check_rules(config)
  ti, pc = config.textual_inversion, config.perfusion
  word, superordinate = str(ti.train_token), str(ti.init_token)
  if not word or int(ti.num_vectors) != 1:
    raise errors.ConfigError("diffusion.sd_perfusion learns one new word: set "
                             "textual_inversion.train_token (e.g. '<my-dog>'), init_token (its "
                             "superordinate, e.g. 'dog') and num_vectors=1 (got "
                             f"{word!r}, {ti.num_vectors})")
  files = tuple(load_concept(p) for p in sd_lib.split_prompts(pc.concepts))
  if word in {c.word for c in files}:
    raise errors.ConfigError(f"a perfusion.concepts file has the run's own word {word!r}: "
                             "sampling with files uses exactly their concepts, under their own "
                             "words; set another textual_inversion.train_token")
  sd = sd_lib.make_method(config, new_tokens={c.word: c.embedding[None] for c in files})
  if files:
    _check_files(files, sd)
  tokenizer = sd_lib.make_tokenizer(config.text)
  templates = sd_lib.split_prompts(config.text.captions)
  super_captions = tokenizer([c.replace("{}", superordinate) for c in templates])
  token_id = sd.text_encoder.vocab_size + len(sd.extras.get("token_rows", ()))
  where = sd.captions == token_id
  init_id = sd.train_init_ids[0]
  if (not templates or not where.any(axis=1).all() or super_captions.shape != sd.captions.shape
      or not np.array_equal(np.where(where, init_id, sd.captions), super_captions)):
    raise errors.ConfigError(f"every caption template of text.captions must name the concept "
                             f"as a word '{{}}' (e.g. 'a photo of a {{}}'), so that "
                             f"{superordinate!r} takes its place token for token: {templates}")
  words = min(16, tokenizer.max_length - 2)
  corpus = np.concatenate([super_captions, _corpus(tokenizer, int(pc.corpus_size), words)])
  return SDPerfusion(sd=sd, word=word, superordinate=superordinate, token_id=token_id,
                     super_captions=super_captions, corpus=corpus,
                     train_gate=Gate(float(pc.train_bias), float(pc.train_temperature)),
                     sample_gate=Gate(float(pc.bias), float(pc.temperature)), files=files,
                     text_load=next((s for s in init_from_lib.parse_init_from(config)
                                     if s.into == "frozen/text_encoder"), None))


def _check_files(files: tuple[Concept, ...], sd: sd_lib.StableDiffusion) -> None:
  """Raises ConfigError unless the files' value offsets fit the U-Net's value projections."""
  def init():
    z = jnp.zeros((1, *sd.latent_shape), jnp.float32)
    ctx = jnp.zeros((1, 1, sd.unet.context_dim), jnp.float32)
    return sd.unet.init(jax.random.key(0), z, jnp.zeros((1,), jnp.int32), {"context": ctx},
                        train=False)["params"]
  layers = value_layers(jax.eval_shape(init))
  for c in files:
    got: Mapping[str, int] = {k: int(np.shape(v)[-1]) for k, v in c.values.items()}
    if got != layers:
      raise errors.ConfigError(f"concept {c.word!r} edits the value projections {got}, this "
                               f"U-Net has {layers}: it was trained on another base")
