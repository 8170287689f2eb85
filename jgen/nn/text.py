"""Text conditioning: a word-level tokenizer with a fixed vocabulary, the `TextEncoder` interface
(token ids -> a context sequence for cross-attention) and a small transformer encoder.

**Tokenizer.** `WordTokenizer` lower-cases a prompt and splits it into words: runs of letters,
and every digit as a word of its own ("digit7" -> "digit", "7"; "17" -> "1", "7"); any other
non-space character is a word too (and, being outside the vocabulary, an error). A prompt of n
words becomes ``[<bos>, w_1, ..., w_n, <eos>, <pad>, ...]``, int32 of length ``max_len``, so
the ids of a batch are ``[B, max_len]`` and the padding mask is ``ids != <pad>``. The
vocabulary is fixed (`VOCAB`: the four special tokens, then the digits, the digit words and a
few dozen caption words), so a run's token ids mean the same in every run of this code; a word
outside it is an error that lists the vocabulary (or ``<unk>`` with ``strict=False``).

**Encoder interface.** A `TextEncoder` maps ``tokens`` int32 ``[B, L]`` and ``mask`` bool
``[B, L]`` (True at real tokens) to ``context`` float32 ``[B, L, context_dim]``, what
`jgen.nn.unet.UNet` cross-attends to (the ``context`` condition of `jgen.nn.conditioning`).
It is two pure functions over a parameter tree: ``init(rng, tokens, mask) -> params`` (also
how a method declares the structure of a frozen encoder) and ``encode(params, tokens, mask,
*, train, rng) -> context``. A method never looks inside the tree, so the same method trains
an encoder jointly (its parameters in ``state.params``) or uses a frozen one (in
``state.frozen``, put there by ``init_from``).

**Plugging in a pretrained encoder** (e.g. a CLIP or T5 text tower read from weight files):
write a class with ``context_dim``, ``max_len``, ``init`` (the parameter tree of the weight
files, randomly initialized: only its structure is used) and ``encode``, and a tokenizer with
the interface of `WordTokenizer` (``encode``, ``check``, ``pad_id``, ``max_len``) for its
vocabulary; convert the weight files once into the tree ``init`` returns and save it as step 0
of a run directory (``jgen.train.Checkpointer(workdir + "/checkpoints").save(0, {"params":
{"text_encoder": tree}, ...})``), and load it with ``init_from.text_encoder.workdir=<that
directory>`` (``source="params"``, ``subtree="text_encoder"``, ``into="frozen/text_encoder"``):
`init_from` checks every leaf's shape before anything compiles, stores the arrays in every
checkpoint and fingerprints them on resume. `jgen.diffusion.ldm` documents the load for an
encoder trained in another latent-diffusion run.

**Transformer encoder.** `TextTransformer`: token embedding + learned positions, ``depth``
pre-LayerNorm blocks of `jgen.nn.transformer` (``x + Attn(LN(x))``, ``x + MLP(LN(x))``),
here bidirectional: every position attends to every real token, ``softmax(q k^T / sqrt(d) +
m) v`` with ``m_j = 0`` at real tokens and ``-inf`` at padding keys; a final LayerNorm and a
linear map to ``context_dim``. Padding is appended after the real tokens and is never a key,
so the outputs at real tokens do not depend on how much padding follows (the U-Net attends to
all L outputs, as Stable Diffusion's U-Net attends to all 77 CLIP positions, padding included:
at a fixed L each is a fixed function of the prompt).
"""

from __future__ import annotations

import dataclasses
import math
import re
import string
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jgen.nn.transformer import Block, _attend

Array = jax.Array
PyTree = Any

__all__ = ["DIGIT_WORDS", "PAIR_TEMPLATES", "SPECIAL_TOKENS", "TEMPLATES", "VOCAB", "TextEncoder",
           "TextTransformer", "TransformerTextEncoder", "WordTokenizer", "caption",
           "default_prompt", "parse_prompts", "template_slots"]

SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")  # ids 0, 1, 2, 3
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_CAPTION_WORDS = (
    "a", "an", "the", "of", "this", "is", "my", "with", "and", "in", "by", "on",
    "digit", "number", "numeral", "figure", "character", "symbol",
    "handwritten", "written", "drawn", "scribbled", "printed",
    "picture", "image", "photo", "drawing", "sketch", "scan",
    "hand", "pen", "pencil", "ink", "white", "black", "gray",
    "small", "big", "large", "thin", "thick", "bold", "neat", "messy")
VOCAB = SPECIAL_TOKENS + tuple(str(d) for d in range(10)) + DIGIT_WORDS + _CAPTION_WORDS

# Caption templates of a digit label k: {word} = DIGIT_WORDS[k], {digit} = str(k), {a} = its
# article ("an eight"). The first is the default prompt of a label.
TEMPLATES = ("a handwritten {word}", "the digit {digit}", "{digit}", "{word}",
             "a picture of {a} {word}")
# Templates of a canvas of two digits side by side (`jgen.data.canvas`, label 10 k0 + k1):
# {word0}, {digit0}, {a0} name the left digit, {word1}, {digit1}, {a1} the right one.
PAIR_TEMPLATES = ("{a0} {word0} and {a1} {word1}", "{digit0} and {digit1}",
                  "{digit0} {digit1}", "{word0} {word1}",
                  "a handwritten {word0} and {a1} {word1}")

_WORD_RE = re.compile(r"[a-z]+|[0-9]|\S")
_SLOT_FIELDS = ("word", "digit", "a")


def template_slots(templates: Sequence[str]) -> int:
  """How many digits the templates name: 1 ({word}, {digit}, {a}) or n ({word0} .. {a<n-1>}).

  Raises:
    ValueError: an unknown placeholder, or templates that name different numbers of digits.
  """
  counts = set()
  for t in templates:
    try:
      names = {f for _, f, _, _ in string.Formatter().parse(t) if f is not None}
    except ValueError as e:
      raise ValueError(f"caption template {t!r}: {e}") from e
    slots = set()
    for name in names:
      m = re.fullmatch(r"(word|digit|a)(\d*)", name)
      if m is None:
        raise ValueError(f"caption template {t!r}: use only the placeholders {{word}}, "
                         "{digit}, {a} (one digit) or {word0}, {digit0}, {a0}, {word1}, ... "
                         f"(a canvas of digits), got {{{name}}}")
      slots.add(-1 if m.group(2) == "" else int(m.group(2)))
    if -1 in slots and len(slots) > 1:
      raise ValueError(f"caption template {t!r} mixes {{word}} with numbered placeholders")
    counts.add(1 if not slots or -1 in slots else max(slots) + 1)
  if len(counts) > 1:
    raise ValueError(f"the caption templates name different numbers of digits: {templates}")
  return counts.pop() if counts else 1


def caption(template: str, label: int, slots: int = 1, *, word: str | None = None) -> str:
  """The caption of `label` in `template`: one digit 0..9 (`TEMPLATES`' placeholders) or, for
  ``slots`` > 1, a canvas of that many digits read left to right in base 10 (label 73 = 7
  then 3; `PAIR_TEMPLATES`' numbered placeholders). With `word`, every digit is named by that
  word instead (a new word such as Perfusion's "sks", article "a"; `label` is ignored).

  Raises:
    ValueError: a label outside 0..10^slots - 1 or a placeholder the template may not use.
  """
  if not 0 <= label < 10 ** slots:
    raise ValueError(f"digit captions of {slots} digit(s) exist for labels 0..{10 ** slots - 1}"
                     f", got {label}")
  digits = [int(d) for d in str(label).zfill(slots)]
  fields = {}
  for i, k in enumerate(digits):
    name = DIGIT_WORDS[k] if word is None else word
    suffix = "" if slots == 1 else str(i)
    fields.update({f"word{suffix}": name, f"digit{suffix}": str(k) if word is None else word,
                   f"a{suffix}": "an" if word is None and name[0] in "aeiou" else "a"})
  try:
    return template.format(**fields)
  except (KeyError, IndexError) as e:
    names = ", ".join("{" + f + "}" for f in fields)
    raise ValueError(f"caption template {template!r}: use only the placeholders {names}") from e


def default_prompt(label: int) -> str:
  """The prompt a label stands for when a caller asks for labels: ``"a handwritten seven"``."""
  return caption(TEMPLATES[0], label)


def parse_prompts(spec: str | Sequence[str] | None) -> tuple[str, ...]:
  """Prompts of a comma-separated string (or a sequence); () for None or blanks."""
  if spec is None:
    return ()
  items = spec.split(",") if isinstance(spec, str) else list(spec)
  return tuple(p.strip() for p in items if p.strip())


@dataclasses.dataclass(frozen=True)
class WordTokenizer:
  """Word-level tokenizer over a fixed vocabulary (module docstring).

  Attributes:
    max_len: tokens per sequence L, <bos> and <eos> included (so at most L - 2 words).
    vocab: the vocabulary; the first four entries are `SPECIAL_TOKENS`.
  """

  max_len: int = 10
  vocab: tuple[str, ...] = VOCAB

  def __post_init__(self):
    if tuple(self.vocab[:4]) != SPECIAL_TOKENS:
      raise ValueError(f"the vocabulary must start with {SPECIAL_TOKENS}, got "
                       f"{tuple(self.vocab[:4])}")
    if len(set(self.vocab)) != len(self.vocab):
      raise ValueError("the vocabulary has repeated words")
    if self.max_len < 3:
      raise ValueError(f"max_len={self.max_len}: a prompt needs <bos>, a word and <eos> (>= 3)")

  pad_id = 0
  unk_id = 1
  bos_id = 2
  eos_id = 3

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)

  @property
  def _index(self) -> dict[str, int]:
    return {w: i for i, w in enumerate(self.vocab)}

  @staticmethod
  def split(text: str) -> list[str]:
    """The words of `text`: lower-cased letter runs, single digits, other characters."""
    return _WORD_RE.findall(text.lower())

  def unknown_words(self, texts: Sequence[str]) -> list[str]:
    """Words of `texts` outside the vocabulary (special tokens count as unknown), in order."""
    index, out = self._index, []
    for text in texts:
      for w in self.split(text):
        if (w not in index or w in SPECIAL_TOKENS) and w not in out:
          out.append(w)
    return out

  def check(self, texts: Sequence[str], *, what: str = "prompt", strict: bool = True) -> None:
    """Raises before any compile if a text does not tokenize.

    Raises:
      ValueError: (strict) unknown words, listing them and the vocabulary; a text with more
        than ``max_len - 2`` words; an empty list.
    """
    if isinstance(texts, str):
      texts = [texts]
    if not texts:
      raise ValueError(f"no {what}s given")
    unknown = self.unknown_words(texts) if strict else []
    if unknown:
      words = " ".join(self.vocab[4:])
      raise ValueError(f"{what}(s) {list(texts)} contain word(s) outside the vocabulary: "
                       f"{unknown}. Use only these {len(self.vocab) - 4} words (lower case; "
                       f"digits are words of their own, no punctuation): {words}")
    for text in texts:
      n = len(self.split(text))
      if n + 2 > self.max_len:
        raise ValueError(f"{what} {text!r} has {n} words: with <bos> and <eos> it needs {n + 2}"
                         f" tokens, but max_len={self.max_len} holds {self.max_len - 2} words; "
                         "shorten it or raise the tokenizer's max_len (ldm.text.max_len)")

  def encode(self, texts: str | Sequence[str], *, strict: bool = True) -> np.ndarray:
    """int32 ids ``[B, max_len]``: ``<bos> words <eos>`` then ``<pad>`` (B = 1 for a str).

    Args:
      texts: prompts.
      strict: unknown words are an error (else ``<unk>``).

    Raises:
      ValueError: see `check`.
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    self.check(texts, strict=strict)
    index = self._index
    out = np.full((len(texts), self.max_len), self.pad_id, np.int32)
    for row, text in enumerate(texts):
      ids = [index.get(w, self.unk_id) if w not in SPECIAL_TOKENS else self.unk_id
             for w in self.split(text)]
      ids = [self.bos_id, *ids, self.eos_id]
      out[row, :len(ids)] = ids
    return out

  def decode(self, ids: np.ndarray) -> list[str]:
    """The texts of ids ``[B, L]`` (special tokens dropped, words joined by spaces)."""
    ids = np.asarray(ids)
    if ids.ndim != 2:
      raise ValueError(f"ids must be [B, L], got shape {ids.shape}")
    return [" ".join(self.vocab[i] for i in row if i > self.eos_id or i == self.unk_id)
            for row in ids.tolist()]

  def mask(self, ids: Array) -> Array:
    """bool ``[B, L]``: True at real tokens (<bos>, words, <eos>), False at padding."""
    return ids != self.pad_id


@runtime_checkable
class TextEncoder(Protocol):
  """Token ids ``[B, L]`` and their padding mask -> context ``[B, L, context_dim]``.

  ``params`` is whatever ``init`` returns; a method keeps it in ``state.params`` (trained) or
  ``state.frozen`` (loaded by ``init_from``) and passes it back to ``encode``.
  """

  @property
  def context_dim(self) -> int:
    ...

  @property
  def max_len(self) -> int:
    ...

  def init(self, rng: Array, tokens: Array, mask: Array) -> PyTree:
    ...

  def encode(self, params: PyTree, tokens: Array, mask: Array, *, train: bool = False,
             rng: Array | None = None) -> Array:
    ...


class _EncoderBlock(Block):
  """`jgen.nn.transformer.Block` (its layers and parameter names) with bidirectional attention
  over the real tokens: ``x + Attn_m(LN(x))``, ``x + MLP(LN(x))``."""

  def __call__(self, x: Array, key_mask: Array, *, train: bool = False) -> Array:
    q, k, v = self.attn._qkv(self.ln1(x))
    h = self.attn.proj(_attend(q, k, v, mask=key_mask, causal=False).reshape(x.shape))
    x = x + self.drop(h, deterministic=not train)
    return self._mlp(x, train)


class TextTransformer(nn.Module):
  """Bidirectional transformer text encoder (module docstring).

  Attributes:
    vocab_size: token ids 0..vocab_size-1.
    max_len: longest sequence L (learned positions).
    context_dim: output feature size D.
    width: model width C.
    depth: blocks.
    num_heads: attention heads (must divide width).
    mlp_ratio: MLP hidden width / C.
    dropout: embedding and residual dropout (``train`` only, 'dropout' rngs).
  """

  vocab_size: int
  max_len: int
  context_dim: int
  width: int = 64
  depth: int = 2
  num_heads: int = 4
  mlp_ratio: int = 4
  dropout: float = 0.0

  def setup(self):
    # Word embeddings N(0, 1) (flax's nn.Embed default, as ClassTokenUNet's label tokens) and
    # a lecun-normal output map, not GPT's 0.02: trained jointly from the denoising loss
    # alone, a 0.02-init encoder started with nearly equal contexts for every prompt and never
    # separated them (ldm_text_digits, 3000 steps: "four"/"five" and "three"/"nine" 0.1 apart
    # at context norm 2.3; 19% / 24% prompt accuracy at w = 1 / 3).
    self.tok_embed = nn.Embed(self.vocab_size, self.width)
    init = nn.initializers.normal(0.02)
    self.pos_embed = self.param("pos_embed", init, (self.max_len, self.width))
    out_scale = 0.02 / math.sqrt(2 * self.depth)
    self.blocks = [_EncoderBlock(self.width, self.num_heads, self.mlp_ratio, self.dropout,
                                 out_scale) for _ in range(self.depth)]
    self.ln_f = nn.LayerNorm()
    self.proj = nn.Dense(self.context_dim)
    self.drop = nn.Dropout(self.dropout)

  def __call__(self, tokens: Array, mask: Array, *, train: bool = False) -> Array:
    """``tokens`` int ``[B, L]``, ``mask`` bool ``[B, L]`` -> float32 ``[B, L, context_dim]``.

    Raises:
      ValueError: tokens not integer ``[B, L]`` with L <= max_len, or a mask of another shape.
    """
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
      raise ValueError(f"tokens must be integer ids [B, L], got {tokens.dtype}{tokens.shape}")
    b, length = tokens.shape
    if length > self.max_len:
      raise ValueError(f"{length} tokens per sequence; this encoder takes at most "
                       f"max_len={self.max_len}")
    if mask.shape != tokens.shape:
      raise ValueError(f"mask must have the tokens' shape {tokens.shape}, got {mask.shape}")
    h = self.tok_embed(tokens) + self.pos_embed[:length]
    h = self.drop(h, deterministic=not train)
    key_mask = mask.astype(bool)[:, None, None, :]  # [B, 1 (queries), 1 (heads), L (keys)]
    for block in self.blocks:
      h = block(h, key_mask, train=train)
    return self.proj(self.ln_f(h)).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class TransformerTextEncoder:
  """The `TextEncoder` of a `TextTransformer` (parameters: its Flax variables)."""

  network: TextTransformer

  @property
  def context_dim(self) -> int:
    return self.network.context_dim

  @property
  def max_len(self) -> int:
    return self.network.max_len

  def init(self, rng: Array, tokens: Array, mask: Array) -> PyTree:
    return self.network.init(rng, tokens, mask, train=False)

  def encode(self, params: PyTree, tokens: Array, mask: Array, *, train: bool = False,
             rng: Array | None = None) -> Array:
    if train and self.network.dropout > 0 and rng is None:
      raise ValueError("encode(train=True) with dropout needs an rng")
    rngs = {"dropout": rng} if train and rng is not None else None
    return self.network.apply(params, tokens, mask, train=train, rngs=rngs)
