"""Perfusion (Tewel et al. 2023, "Key-Locked Rank One Editing for Text-to-Image
Personalization") of the text latent diffusion model: `config.method = "diffusion.perfusion"`.

A concept is a new word [V] (``perfusion.word``) of a superordinate category (the digit
``perfusion.subject_class``: "[V]" is a kind of "7"): a learned token embedding plus gated
rank-one edits of the key and value projections of every cross-attention layer of the U-Net.

**The edit.** For a projection ``f(x) = W x + b`` of a context token x [D], the concept's
encoding i* [D] (the text encoder's output at the concept's token), a target o*, and the input
covariance C = E[x x^T] over a corpus of text-encoder outputs, the rank-one edit of ROME
(Meng et al. 2022) is

    W' = W + (o* - W i*) i*^T C^-1 / (i*^T C^-1 i*),

which maps i* to o* exactly and leaves every x with x^T C^-1 i* = 0 unchanged. Writing
alpha(x) = x^T C^-1 i* / (i*^T C^-1 i*), W' x = W (x - alpha i*) + alpha o*. Perfusion gates the
edit per input token: alpha in the second term becomes

    g(x) = sigmoid((alpha(x) - beta) / tau)         (bias beta, temperature tau),

so W' x = W (x - alpha i*) + g o* (the paper's Algorithm 1); tau = 0 here means no gate
(g = alpha: the plain rank-one edit above). The targets: the **key** is locked to the
superordinate's, o*_K = W_K i_s with i_s the encoder's output at the superordinate word in the
same prompts, so "[V]" attends where "7" would; the **value** target is learned, o*_V = W_V i_s
+ delta_l per layer l (delta = 0 at the start, the paper's initialisation at the
superordinate's value). Both edits are then one change of the projection's input plus, for the
value, a gated offset:

    K' = f_K(x - alpha i* + g i_s),        V' = f_V(x - alpha i* + g i_s) + g delta_l,

(biases b untouched). Several concepts m add their terms, each gated on its own i*_m (the
paper's approximate multi-concept form, without the Cholesky orthogonalisation). The edits
reach any U-Net without changing its modules: `perfusion_edit` intercepts the calls of its
cross-attention K / V projections (`flax.linen.intercept_methods`; `KEY_LAYERS` and
`VALUE_LAYERS` name jgen's ``*_cross_attn/k|v`` and Stable Diffusion's ``attn2/to_k|to_v``).

**Training** (one loop; rules ``(("perfusion/.*", 1.0), (".*", "frozen"))``, checked): the
base text run comes in through ``init_from.base`` (U-Net and text encoder, frozen); the
concept's token row is the superordinate word's row plus a learned offset, and the value
offsets delta_l train. Each step encodes the T caption templates with the concept word ("a
handwritten [V]", "the digit [V]", ...): i* is the mean of the encoder's outputs at the
concept's token over those T captions (recomputed every step, differentiable; the paper keeps an
EMA of it), i_s the same mean over the class captions ("a handwritten seven", "the digit 7",
...). The loss is the DDPM loss of the subject's latents given a concept caption, with the
training gate (``perfusion.train_bias``, ``train_temperature``: 0.75, 0.1, the paper's).
C is estimated once, before training (`Prepares`), over the encoder's outputs at every position
of the caption table and of ``perfusion.corpus_size`` random prompts of the vocabulary, and kept
as ``state.frozen["perfusion"]["c_inv"]`` (C^-1, shared by every concept of the base).

**Concept files** (`Concept`, `save_concept`, `load_concept`: safetensors, a few kilobytes):
the word, the superordinate, the token row, i*, i_s and the value offsets; `sample_concepts`
samples prompts with one or several concept files at once, the gate's bias and temperature
being sampling options.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import traverse_util
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from jgen import errors
from jgen.diffusion import ldm as ldm_lib
from jgen.diffusion.guidance import cfg_eps_fn
from jgen.nn import text as text_lib
from jgen.train import init_from as init_from_lib
from jgen.train import rules as rules_lib
from jgen.train.state import TrainState

__all__ = ["DREAMBOOTH_RULES", "KEY_LAYERS", "MODES", "PERFUSION", "PERFUSION_RULES",
           "VALUE_LAYERS", "Concept", "Gate",
           "Perfusion", "concept_arrays", "extend_text", "gate", "input_covariance",
           "load_concept", "make_method", "perfusion_edit", "rank_one_similarity",
           "sample_concepts", "save_concept", "value_layers"]

PERFUSION = "perfusion"
PERFUSION_RULES = rules_lib.parse_rules(((f"{PERFUSION}/.*", 1.0), (".*", "frozen")))
# DreamBooth on the same model: the token row and the whole U-Net train, the row at 100 times
# the U-Net's rate (DreamBooth's Adam 1e-4 for the U-Net; 1e-2 for the row, the rate at which
# the row of textual inversion and Perfusion moves away from the class word's in 400 steps).
DREAMBOOTH_RULES = rules_lib.parse_rules(((f"{PERFUSION}/embedding", 100.0), ("unet/.*", 1.0),
                                          (".*", "frozen")))
MODES = ("perfusion", "textual_inversion", "dreambooth")
# Module paths (inside the U-Net) of the cross-attention key and value projections: jgen's
# `CrossAttnBlock` and Stable Diffusion's `TransformerBlock.attn2`.
KEY_LAYERS = re.compile(r"(.*_cross_attn(_\d+)?|(.*/)?attn2)/(k|to_k)")
VALUE_LAYERS = re.compile(r"(.*_cross_attn(_\d+)?|(.*/)?attn2)/(v|to_v)")
_FORMAT = "jgen-perfusion-concept-1"

PyTree = Any


# ------------------------------------------------------------------ the math


def input_covariance(inputs: np.ndarray, ridge: float = 1e-4) -> np.ndarray:
  """C = (1/N) sum_n x_n x_n^T + ridge tr(C)/D I of inputs x [N, D], in float64.

  The uncentred second moment (ROME's and Perfusion's C); the ridge keeps C^-1 finite when the
  corpus spans fewer than D directions.
  """
  x = np.asarray(inputs, np.float64).reshape(-1, np.shape(inputs)[-1])
  c = x.T @ x / x.shape[0]
  return c + ridge * np.trace(c) / c.shape[0] * np.eye(c.shape[0])


def rank_one_similarity(x: jax.Array, i_star: jax.Array, c_inv: jax.Array) -> jax.Array:
  """alpha = x^T C^-1 i* / (i*^T C^-1 i*): x [..., D], i* [M, D] -> [..., M]."""
  proj = i_star @ c_inv.T                                  # [M, D]: rows (C^-1 i*)^T
  energy = jnp.sum(proj * i_star, axis=-1)                 # [M]
  return (x @ proj.T) / energy


@dataclasses.dataclass(frozen=True)
class Gate:
  """g(alpha) = sigmoid((alpha - bias) / temperature); temperature 0: g = alpha (no gate)."""

  bias: float = 0.75
  temperature: float = 0.1

  def __post_init__(self):
    if self.temperature < 0:
      raise errors.ConfigError(f"the gate's temperature must be >= 0 (0: no gate), got "
                               f"{self.temperature}")


def gate(alpha: jax.Array, g: Gate) -> jax.Array:
  """The gate of similarities alpha (see `Gate`)."""
  if g.temperature == 0:
    return alpha
  return jax.nn.sigmoid((alpha - g.bias) / g.temperature)


@contextlib.contextmanager
def perfusion_edit(arrays: Mapping[str, Any] | None, g: Gate) -> Iterator[None]:
  """Within it, every U-Net applied has its cross-attention K / V projections edited.

  Args:
    arrays: ``i_star`` [M, D], ``i_super`` [M, D], ``c_inv`` [D, D] and ``values``, a mapping
      from each value projection's parent path ("down_1_block_0_cross_attn") to its offsets
      delta [M, C]; None: no edit (the U-Net is the base's, bit for bit).
    g: the gate.

  Raises:
    ValueError (when the U-Net is traced): a value projection without offsets.
  """
  if arrays is None:
    yield
    return
  i_star = jnp.asarray(arrays["i_star"], jnp.float32)
  i_super = jnp.asarray(arrays["i_super"], jnp.float32)
  c_inv = jnp.asarray(arrays["c_inv"], jnp.float32)
  values = arrays["values"]

  def interceptor(next_fun, args, kwargs, context):
    if context.method_name != "__call__" or not isinstance(context.module, nn.Dense):
      return next_fun(*args, **kwargs)
    path = "/".join(context.module.path)
    is_key = KEY_LAYERS.fullmatch(path) is not None
    if not is_key and VALUE_LAYERS.fullmatch(path) is None:
      return next_fun(*args, **kwargs)
    x = args[0]
    alpha = rank_one_similarity(x.astype(jnp.float32), i_star, c_inv)   # [..., M]
    weight = gate(alpha, g)
    moved = x.astype(jnp.float32) - alpha @ i_star + weight @ i_super
    out = next_fun(moved.astype(x.dtype), *args[1:], **kwargs)
    if is_key:
      return out
    parent = "/".join(context.module.path[:-1])
    if parent not in values:
      raise ValueError(f"the concept has no value offsets for the cross-attention layer "
                       f"{parent!r} (it has {sorted(values)}): it was trained on another "
                       "U-Net")
    return out + (weight @ jnp.asarray(values[parent], jnp.float32)).astype(out.dtype)

  with nn.intercept_methods(interceptor):
    yield


def value_layers(unet_params: PyTree) -> dict[str, int]:
  """{parent path: output width C} of the value projections of a U-Net's parameters."""
  flat = traverse_util.flatten_dict(unet_params.get("params", unet_params), sep="/")
  out = {}
  for path, leaf in flat.items():
    if path.endswith("/kernel") and VALUE_LAYERS.fullmatch(path[:-len("/kernel")]):
      out[path[:-len("/kernel")].rsplit("/", 1)[0]] = int(leaf.shape[-1])
  return out


# ------------------------------------------------------------------ concepts


@dataclasses.dataclass(frozen=True)
class Concept:
  """A trained concept (module docstring).

  Attributes:
    word: the concept's word in prompts ("sks").
    superordinate: the superordinate's words, as a caption names it ("seven / 7").
    embedding: float32 [W], the token row of the word.
    i_star: float32 [D], the concept's encoding.
    i_super: float32 [D], the superordinate's encoding (the key lock).
    values: {layer path: float32 [C]}, the value offsets delta.
    base: fingerprint of the base text encoder (C^-1 and the encodings are its).
  """

  word: str
  superordinate: str
  embedding: np.ndarray
  i_star: np.ndarray
  i_super: np.ndarray
  values: dict[str, np.ndarray]
  base: str = ""

  @property
  def num_parameters(self) -> int:
    """The trained numbers: the token row and the value offsets."""
    return int(self.embedding.size + sum(v.size for v in self.values.values()))


def save_concept(path: str, concept: Concept) -> None:
  """Writes a concept as a safetensors file (whole, or nothing on an error)."""
  tensors = {"embedding": concept.embedding, "i_star": concept.i_star,
             "i_super": concept.i_super}
  tensors.update({f"values/{k}": v for k, v in concept.values.items()})
  tensors = {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in tensors.items()}
  meta = {"format": _FORMAT, "word": concept.word, "superordinate": concept.superordinate,
          "base": concept.base}
  out = epath.Path(path)
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = out.parent / (out.name + ".tmp")
  save_file(tensors, str(tmp), metadata=meta)
  tmp.replace(out)   # over an older file of the same name


def load_concept(path: str) -> Concept:
  """Reads a file `save_concept` wrote (safetensors: no code runs).

  Raises:
    CheckpointError: a missing file or one that is not a jgen Perfusion concept.
  """
  p = epath.Path(path)
  if not p.exists():
    raise errors.CheckpointError(f"no concept file at {path}: write one with "
                                 "`python -m jgen.cli.perfusion export --run WORKDIR --out FILE`")
  with safe_open(str(p), framework="numpy") as f:
    meta = f.metadata() or {}
  if meta.get("format") != _FORMAT:
    raise errors.CheckpointError(f"{path} is not a jgen Perfusion concept file (format "
                                 f"{meta.get('format')!r}, expected {_FORMAT!r})")
  t = load_file(str(p))
  values = {k[len("values/"):]: v for k, v in t.items() if k.startswith("values/")}
  return Concept(word=meta["word"], superordinate=meta["superordinate"],
                 embedding=t["embedding"], i_star=t["i_star"], i_super=t["i_super"],
                 values=values, base=meta.get("base", ""))


def concept_arrays(concepts: Sequence[Concept], c_inv: Any) -> dict[str, Any]:
  """The `perfusion_edit` arrays of several concepts (stacked along M).

  Raises:
    ConfigError: concepts with the same word or other value layers.
  """
  words = [c.word for c in concepts]
  if len(set(words)) != len(words):
    raise errors.ConfigError(f"concepts with the same word {words}: rename one")
  layers = set(concepts[0].values)
  for c in concepts[1:]:
    if set(c.values) != layers:
      raise errors.ConfigError(f"concept {c.word!r} edits other layers than "
                               f"{concepts[0].word!r}: they were trained on other U-Nets")
  return {"i_star": np.stack([c.i_star for c in concepts]),
          "i_super": np.stack([c.i_super for c in concepts]),
          "c_inv": np.asarray(c_inv, np.float32),
          "values": {k: np.stack([c.values[k] for c in concepts]) for k in sorted(layers)}}


def extend_text(text: ldm_lib.TextLatentDiffusion, words: Sequence[str]
                ) -> tuple[text_lib.WordTokenizer, text_lib.TransformerTextEncoder]:
  """The tokenizer and encoder of `text` with new words appended to the vocabulary (their ids
  follow it; their token rows are appended to the encoder's table by the caller).

  Raises:
    ConfigError: a word that is no single lower-case letter run, or one the vocabulary has.
  """
  for w in words:
    if not re.fullmatch(r"[a-z]+", w) or w in text.tokenizer.vocab:
      raise errors.ConfigError(f"perfusion word {w!r} must be lower-case letters and outside "
                               "the vocabulary (e.g. 'sks'), so it is one new token")
  tokenizer = dataclasses.replace(text.tokenizer, vocab=tuple(text.tokenizer.vocab) + tuple(words))
  network = text.text_encoder.network
  encoder = text_lib.TransformerTextEncoder(
      dataclasses.replace(network, vocab_size=tokenizer.vocab_size))
  return tokenizer, encoder


def _with_rows(encoder_params: PyTree, rows: jax.Array) -> PyTree:
  """The encoder's variables with `rows` [M, W] appended to its token table."""
  p = encoder_params["params"]
  table = p["tok_embed"]["embedding"]
  table = jnp.concatenate([table, rows.astype(table.dtype)], axis=0)
  return {**encoder_params, "params": {**p, "tok_embed": {"embedding": table}}}


def _mean_at(context: jax.Array, tokens: jax.Array, token_id: int | jax.Array) -> jax.Array:
  """The mean of context [B, L, D] over the positions where tokens [B, L] == token_id."""
  mask = (tokens == token_id).astype(context.dtype)[..., None]
  return jnp.sum(context * mask, axis=(0, 1)) / jnp.maximum(jnp.sum(mask), 1.0)


# ------------------------------------------------------------------ the method


@dataclasses.dataclass(frozen=True, eq=False)
class Perfusion:
  """One Perfusion concept trained on a `TextLatentDiffusion` base (module docstring).

  Attributes:
    ldm: the base text method (its tokenizer and encoder without the concept word).
    word: the concept's word.
    subject_class: the superordinate digit.
    tokenizer, encoder: the base's, with the word appended (id ``len(base vocab)``).
    concept_captions: int32 [T, L], the caption templates with the concept word.
    class_captions: int32 [T, L], the same templates of the superordinate digit.
    prompts: the sampling prompts (may use the word); prompt_tokens: int32 [P, L].
    train_gate, sample_gate: the gates in training and at sampling.
    corpus_size: random prompts of the vocabulary in the covariance corpus.
    base_load: the ``init_from.base`` load (to estimate C before training).
    c_inv: float32 [D, D] once `prepare` has estimated it.
    mode: "perfusion" (the K / V edits on); "textual_inversion" (the token row alone trains,
      the U-Net is the base's: the ablation of the paper's comparison); "dreambooth" (the token
      row and the whole U-Net train, no edit, plus the prior-preservation loss on class
      latents the base samples: the paper's other comparison).
    prior_weight: DreamBooth's lambda (0 in the other modes).
    num_class_images: DreamBooth's class latents, sampled by the base in `prepare`.
    class_latents: float32 [N, h, w, c] and class_caption_index: int32 [N] (rows of
      `class_captions`) once `prepare` has made them.
  """

  ldm: ldm_lib.TextLatentDiffusion
  word: str
  subject_class: int
  tokenizer: text_lib.WordTokenizer
  encoder: text_lib.TransformerTextEncoder
  concept_captions: np.ndarray
  class_captions: np.ndarray
  prompts: tuple[str, ...]
  prompt_tokens: np.ndarray
  train_gate: Gate = Gate(0.75, 0.1)
  sample_gate: Gate = Gate(0.7, 0.15)
  corpus_size: int = 500
  base_load: init_from_lib.InitFrom | None = None
  c_inv: np.ndarray | None = None
  mode: str = "perfusion"
  prior_weight: float = 0.0
  num_class_images: int = 100
  class_latents: np.ndarray | None = None
  class_caption_index: np.ndarray | None = None

  def __post_init__(self):
    _check_mode(self.mode)
    if (self.mode == "dreambooth") != (self.prior_weight > 0):
      raise errors.ConfigError(
          f"perfusion.prior_weight={self.prior_weight} with mode {self.mode!r}: DreamBooth "
          "has the prior-preservation term (> 0), the other modes none (0)")

  @property
  def edit(self) -> bool:
    """The K / V edits are on (Perfusion proper)."""
    return self.mode == "perfusion"

  @property
  def token_id(self) -> int:
    return self.tokenizer.vocab_size - 1

  @property
  def super_id(self) -> int:
    """The token whose row the concept's row starts from: the digit's word ("seven")."""
    return self.tokenizer.vocab.index(text_lib.DIGIT_WORDS[self.subject_class])

  @property
  def num_classes(self) -> int:
    return len(self.prompts)

  # ------------------------------------------------------------------ covariance

  def corpus(self) -> np.ndarray:
    """int32 [N, L]: the caption table and `corpus_size` random prompts of 1..L-2 base words."""
    rng = np.random.default_rng(0)
    words = self.ldm.tokenizer.vocab[4:]
    n_max = self.ldm.tokenizer.max_len - 2
    texts = [" ".join(rng.choice(words, size=rng.integers(1, n_max + 1)))
             for _ in range(self.corpus_size)]
    return np.concatenate([self.ldm.captions, self.ldm.tokenizer.encode(texts)])

  def estimate_c_inv(self, encoder_params: PyTree) -> np.ndarray:
    """C^-1 (float32 [D, D]) of the encoder's outputs at every position of `corpus`."""
    tokens = jnp.asarray(self.corpus())
    context = jax.jit(self.ldm.context)(encoder_params, tokens)
    return np.linalg.inv(input_covariance(np.asarray(context))).astype(np.float32)

  def prepare(self, workdir: str) -> "Perfusion":
    """The method with C^-1 estimated from the base run's text encoder (before training)."""
    del workdir
    if self.c_inv is not None:
      return self
    if self.base_load is None:
      raise errors.ConfigError("Perfusion estimates C with the base text encoder: set "
                               "--config.init_from.base.workdir to the trained text run")
    base, _ = init_from_lib.load(self.base_load)
    out = dataclasses.replace(self, c_inv=self.estimate_c_inv(base[ldm_lib.TEXT_FROZEN]))
    if self.mode == "dreambooth":
      latents, index = self.class_prior(jax.device_put(base))
      out = dataclasses.replace(out, class_latents=latents, class_caption_index=index)
    return out

  def class_prior(self, base: PyTree) -> tuple[np.ndarray, np.ndarray]:
    """DreamBooth's class data: `num_class_images` latents the frozen base samples (its
    sampler and guidance) for the class captions, template j = i mod T for latent i; the
    latents themselves, not decoded and re-encoded (seed 0: the same in every run)."""
    n, t = self.num_class_images, self.class_captions.shape[0]
    index = np.arange(n, dtype=np.int32) % t
    tokens = jnp.asarray(self.class_captions)[index]
    text = self.ldm
    eps_fn = _guided_eps_fn(text, text.text_encoder, base[ldm_lib.TEXT_FROZEN], base["unet"],
                            tokens)
    z = jax.jit(lambda key: text.ddpm.run_sampler(eps_fn, key, n))(jax.random.key(0))
    return np.asarray(z, np.float32), index

  # ------------------------------------------------------------------ training

  def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
    state = self.ldm.init(rng, batch)
    params = dict(state.params)
    width = params[ldm_lib.TEXT_FROZEN]["params"]["tok_embed"]["embedding"].shape[-1]
    values = {k: jnp.zeros((c,), jnp.float32) for k, c in value_layers(params["unet"]).items()}
    params[PERFUSION] = {"embedding": jnp.zeros((width,), jnp.float32),
                         "values": traverse_util.unflatten_dict(values, sep="/")}
    dim = self.ldm.text_encoder.context_dim
    c_inv = jnp.eye(dim, dtype=jnp.float32) if self.c_inv is None else jnp.asarray(self.c_inv)
    frozen = {**state.frozen, PERFUSION: {"c_inv": c_inv}}
    if self.mode == "dreambooth":
      n = self.num_class_images
      latents = (np.zeros((n, *self.ldm.latent_shape), np.float32)
                 if self.class_latents is None else self.class_latents)
      index = (np.zeros((n,), np.int32) if self.class_caption_index is None
               else self.class_caption_index)
      frozen["prior"] = {"latents": jnp.asarray(latents), "caption": jnp.asarray(index)}
    return TrainState.create(params=params, tx=self.ldm.ddpm.tx,
                             rng=jax.random.fold_in(rng, 1), ema_decay=self.ldm.ddpm.ema_decay,
                             ema_warmup=self.ldm.ddpm.ema_warmup,
                             model_state=state.model_state, frozen=frozen)

  def token_row(self, params: PyTree) -> jax.Array:
    """The concept's token row: the superordinate word's row plus the learned offset."""
    table = params[ldm_lib.TEXT_FROZEN]["params"]["tok_embed"]["embedding"]
    return table[self.super_id] + params[PERFUSION]["embedding"]

  def encoder_with_concept(self, params: PyTree) -> PyTree:
    return _with_rows(params[ldm_lib.TEXT_FROZEN], self.token_row(params)[None])

  def edit_arrays(self, params: PyTree, frozen: PyTree) -> dict[str, Any]:
    """i* (of the current token row), i_s, C^-1 and the value offsets, M = 1."""
    encoder = self.encoder_with_concept(params)
    concept = jnp.asarray(self.concept_captions)
    i_star = _mean_at(self.encoder.encode(encoder, concept, self.tokenizer.mask(concept)),
                      concept, self.token_id)
    i_super = jax.lax.stop_gradient(self._super_encoding(params))
    values = traverse_util.flatten_dict(params[PERFUSION]["values"], sep="/")
    return {"i_star": i_star[None], "i_super": i_super[None],
            "c_inv": frozen[PERFUSION]["c_inv"], "values": {k: v[None] for k, v in values.items()}}

  def _super_encoding(self, params: PyTree) -> jax.Array:
    """i_s: the mean encoding at the concept's position of the class captions."""
    tokens = jnp.asarray(self.class_captions)
    context = self.ldm.context(params[ldm_lib.TEXT_FROZEN], tokens)
    where = jnp.asarray(self.concept_captions) == self.token_id
    return jnp.sum(context * where[..., None], axis=(0, 1)) / jnp.sum(where)

  def loss_fn(self, params, frozen: PyTree, model_state: PyTree, batch: dict[str, jax.Array],
              rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The DDPM loss of the subject's latents given concept captions, with the edit on."""
    z = self.ldm.latents(frozen, model_state, batch["image"])
    pick_rng, loss_rng = jax.random.split(rng)
    pick = jax.random.randint(pick_rng, (z.shape[0],), 0, self.concept_captions.shape[0])
    tokens = jnp.asarray(self.concept_captions)[pick]
    context = self.encoder.encode(self.encoder_with_concept(params), tokens,
                                  self.tokenizer.mask(tokens))
    arrays = self.edit_arrays(params, frozen)
    with perfusion_edit(arrays if self.edit else None, self.train_gate):
      loss, metrics = self.ldm.ddpm.loss_fn(params["unet"], {"image": z, "context": context},
                                            loss_rng)
    metrics = {**metrics, "i_star_norm": jnp.linalg.norm(arrays["i_star"])}
    if self.mode == "dreambooth":   # + lambda * the class prior's loss (Ruiz et al., eq. 2)
      prior = frozen["prior"]
      prior_rng, pick_rng, _ = jax.random.split(jax.random.fold_in(rng, 1), 3)  # as measured
      pick = jax.random.randint(pick_rng, (z.shape[0],), 0, prior["latents"].shape[0])
      tokens = jnp.asarray(self.class_captions)[prior["caption"][pick]]
      context = self.ldm.context(params[ldm_lib.TEXT_FROZEN], tokens)
      prior_loss, _ = self.ldm.ddpm.loss_fn(
          params["unet"], {"image": prior["latents"][pick], "context": context}, prior_rng)
      metrics = {**metrics, "instance_loss": loss, "prior_loss": prior_loss}
      loss = loss + self.prior_weight * prior_loss
      metrics["loss"] = loss
    return loss, metrics

  def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    return ldm_lib.latent_train_step(self.loss_fn, state, batch, rng)

  # ------------------------------------------------------------------ concepts, sampling

  def concept(self, params: PyTree, frozen: PyTree) -> Concept:
    """The trained concept of a state's parameters (EMA for a file)."""
    arrays = jax.device_get(self.edit_arrays(params, frozen))
    enc = params[ldm_lib.TEXT_FROZEN]
    values = {k: np.asarray(v[0]) for k, v in arrays["values"].items()} if self.edit else {}
    return Concept(word=self.word, superordinate=text_lib.DIGIT_WORDS[self.subject_class],
                   embedding=np.asarray(self.token_row(params)),
                   i_star=np.asarray(arrays["i_star"][0]),
                   i_super=np.asarray(arrays["i_super"][0]), values=values,
                   base=_fingerprint(enc, params["unet"] if self.mode == "dreambooth" else None))

  def sample_conditional(self, state: TrainState, rng: jax.Array,
                         conditions: dict[str, jax.Array], n: int) -> jax.Array:
    """`n` images of ``prompts[label]`` with the trained concept (EMA), the sampling gate."""
    ema = state.ema_params
    tokens = jnp.asarray(self.prompt_tokens)[jnp.asarray(conditions["label"], jnp.int32)]
    arrays = self.edit_arrays(ema, state.frozen)
    return _sample(self.ldm, self.encoder, self.encoder_with_concept(ema), ema["unet"], state,
                   arrays if self.edit else None, self.sample_gate, tokens, rng, n)

  def sample(self, state: TrainState, rng: jax.Array, n: int) -> jax.Array:
    labels = jnp.arange(n, dtype=jnp.int32) % len(self.prompts)
    return self.sample_conditional(state, rng, {"label": labels}, n)

  @property
  def sample_tag(self) -> str:
    g = self.sample_gate
    if self.mode == "dreambooth":
      return "perfusion_dreambooth_" + self.ldm.sample_tag
    if not self.edit:
      return "perfusion_noedit_" + self.ldm.sample_tag
    return f"perfusion_b{g.bias:g}_t{g.temperature:g}_" + self.ldm.sample_tag


def _check_mode(mode: str) -> None:
  if mode not in MODES:
    raise errors.ConfigError(f"perfusion.mode={mode!r}: choose one of {MODES}")


def _fingerprint(encoder: PyTree, unet: PyTree | None = None) -> str:
  """A concept's `base`: the text encoder's fingerprint, and for a DreamBooth concept (whose
  row goes with its fine-tuned U-Net) "+unet:" and the U-Net's."""
  out = init_from_lib.fingerprint(jax.device_get(encoder))[:16]
  if unet is not None:
    out += "+unet:" + init_from_lib.fingerprint(jax.device_get(unet))[:16]
  return out


def _guided_eps_fn(text: ldm_lib.TextLatentDiffusion, encoder: text_lib.TextEncoder,
                   encoder_params: PyTree, unet_params: PyTree, tokens: jax.Array):
  """eps_u + w (eps_c - eps_u) of the prompt tokens [n, L] against the empty prompt, w the base's
  guidance scale (`cfg_eps_fn`)."""
  null = jnp.broadcast_to(jnp.asarray(text.captions[-1]), tokens.shape)
  cond = encoder.encode(encoder_params, tokens, tokens != text.tokenizer.pad_id)
  uncond = encoder.encode(encoder_params, null, null != text.tokenizer.pad_id)

  def eps_cond_fn(x, t, c):
    return text.ddpm.sampling_fn(unet_params, c)(x, t)
  return cfg_eps_fn(eps_cond_fn, {"context": cond}, {"context": uncond}, text.guidance_scale)


def _sample(text: ldm_lib.TextLatentDiffusion, encoder: text_lib.TransformerTextEncoder,
            encoder_params: PyTree, unet_params: PyTree, state: TrainState,
            arrays: Mapping[str, Any] | None, g: Gate, tokens: jax.Array, rng: jax.Array,
            n: int) -> jax.Array:
  """Decoded samples of prompt tokens [n, L] with the edit `arrays`, CFG against the empty
  prompt (edited too, as every context the U-Net sees)."""
  eps_fn = _guided_eps_fn(text, encoder, encoder_params, unet_params, tokens)
  with perfusion_edit(arrays, g):
    z = text.ddpm.run_sampler(eps_fn, rng, n)
  return text.decode_latents(state.frozen, state.model_state, z)


def sample_concepts(text: ldm_lib.TextLatentDiffusion, state: TrainState,
                    concepts: Sequence[Concept], c_inv: Any, prompts: Sequence[str],
                    rng: jax.Array, *, g: Gate = Gate(0.7, 0.15)) -> jax.Array:
  """Samples of `prompts` (one per image) with several concepts at once (none: the base).

  Args:
    text: the base text method; state: its state (EMA parameters sample).
    concepts: `load_concept` results; c_inv: C^-1 of the base encoder.
    prompts: one prompt per sample, using the concepts' words.
    g: the gate (bias, temperature) at sampling.

  Raises:
    ConfigError: a prompt that does not tokenize, concepts of another base encoder.
  """
  ema = state.ema_params
  enc = text.encoder_params(ema, state.frozen)
  if concepts:
    base = _fingerprint(enc)
    for c in concepts:
      encoder_print, _, unet_print = c.base.partition("+unet:")
      if encoder_print and encoder_print != base:
        raise errors.ConfigError(f"concept {c.word!r} was trained on another text encoder "
                                 f"({encoder_print}, this base's is {base})")
      if unet_print and _fingerprint(enc, ema["unet"]) != c.base:
        raise errors.ConfigError(f"concept {c.word!r} is a DreamBooth concept: its token row "
                                 "goes with the U-Net its run fine-tuned; sample with that run")
  tokenizer, encoder = extend_text(text, [c.word for c in concepts])
  try:
    tokens = jnp.asarray(tokenizer.encode(list(prompts)))
  except ValueError as e:
    raise errors.ConfigError(str(e)) from e
  params = enc
  arrays = None
  if concepts:
    params = _with_rows(enc, jnp.asarray(np.stack([c.embedding for c in concepts])))
    if any(c.values for c in concepts):
      arrays = concept_arrays(concepts, c_inv)
  return _sample(text, encoder, params, ema["unet"], state, arrays, g, tokens, rng,
                 len(prompts))


def make_method(config: Any) -> Perfusion:
  """Perfusion of an ldm_text_digits-like config with ``init_from.base`` (the trained text
  run) and the ``perfusion`` block (``word``, ``subject_class``, ``prompts``, ``train_bias``,
  ``train_temperature``, ``bias``, ``temperature``, ``corpus_size``)."""
  pc = config.perfusion
  # Runs recorded before `mode` had `edit` (False: the token row alone).
  mode = str(pc.get("mode") or ("perfusion" if pc.get("edit", True) else "textual_inversion"))
  _check_mode(mode)   # before the rules, which depend on it
  if mode == "dreambooth":
    text = ldm_lib.text_method_on_base(config, "diffusion.perfusion (mode dreambooth)",
                                       DREAMBOOTH_RULES,
                                       trains="the concept's token row and the U-Net")
  else:
    text = ldm_lib.text_method_on_base(config, "diffusion.perfusion", PERFUSION_RULES,
                                       trains="the concept's token row and value offsets only")
  text = dataclasses.replace(text, ddpm=dataclasses.replace(text.ddpm, cond_drop_prob=0.0),
                             cond_drop_prob=0.0)
  word, k = str(pc.word), int(pc.subject_class)
  templates = tuple(config.ldm.text.templates)
  slots = text_lib.template_slots(templates)   # 2 on a canvas: the subject beside itself
  digits = min(text.num_caption_classes, len(text_lib.DIGIT_WORDS))
  if not 0 <= k < digits:
    raise errors.ConfigError(f"perfusion.subject_class={k} must be a digit of the base, 0..."
                             f"{digits - 1}")
  tokenizer, encoder = extend_text(text, [word])
  concept = [text_lib.caption(t, 0, slots, word=word) for t in templates]
  classes = [text_lib.caption(t, int(str(k) * slots), slots) for t in templates]
  prompts = text_lib.parse_prompts(pc.prompts) or (concept[0],)
  tokenizer.check(prompts, what="perfusion.prompts entry")
  concept_tokens = tokenizer.encode(concept)
  class_tokens = text.tokenizer.encode(classes)
  if not np.array_equal(concept_tokens == tokenizer.vocab_size - 1,
                        np.isin(class_tokens, [tokenizer.vocab.index(str(k)),
                                               tokenizer.vocab.index(text_lib.DIGIT_WORDS[k])])):
    raise errors.ConfigError("every caption template must name each digit once ({word} or "
                             f"{{digit}}), so [V] takes its place: {templates}")
  base = config.init_from.base
  return Perfusion(ldm=text, word=word, subject_class=k, tokenizer=tokenizer, encoder=encoder,
                   concept_captions=concept_tokens, class_captions=class_tokens,
                   prompts=prompts, prompt_tokens=tokenizer.encode(prompts),
                   train_gate=Gate(float(pc.train_bias), float(pc.train_temperature)),
                   sample_gate=Gate(float(pc.bias), float(pc.temperature)),
                   corpus_size=int(pc.corpus_size), mode=mode,
                   prior_weight=float(pc.get("prior_weight", 0.0)),
                   num_class_images=int(pc.get("num_class_images", 100)),
                   base_load=init_from_lib.InitFrom(base.workdir, step=base.get("step"),
                                                    source=base.get("source", "ema")))
