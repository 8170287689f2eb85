"""CLIP's byte-level BPE tokenizer (Stable Diffusion's prompts -> 77 token ids), in pure Python.

Equal to transformers' ``CLIPTokenizer`` (the tokenizers-backed one of transformers 5, the
tokenizer diffusers' SD pipelines run). A prompt becomes ids in five steps:

1. **Special tokens** ``<|startoftext|>``, ``<|endoftext|>`` and the pad token written in the
   text are cut out first (case-sensitive) and become their ids. With SD 2.x's pad token ``!``
   this makes ``"wow!!"`` ``[wow, !, !]`` rather than OpenCLIP's ``[wow, !!]``: transformers
   (and so diffusers) registers the pad token as special, and this tokenizer follows it.
2. **Normalisation** of each remaining piece: Unicode NFC, every run of whitespace -> one space,
   lower-casing character by character (no final-sigma rule, as tokenizers' ``Lowercase``).
   No ftfy repair and no HTML unescaping (OpenAI's and open_clip's tokenizers do both;
   transformers does neither). Then **added tokens** (`add_tokens`, e.g. textual-inversion
   placeholders, matched after normalisation, longest first, anywhere in the text) are cut out
   and become their ids.
3. **Pre-tokenisation** by CLIP's pattern ``<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|
   've|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+``: a run of letters, one number
   character, or a run of other non-space characters (punctuation, symbols, emoji), with the
   English contractions as pieces of their own; spaces separate pieces and are dropped. (The
   pieces are then split again by the GPT-2 pattern of tokenizers' byte-level step, which
   changes only the literal ``<|endoftext|>`` of a text that wrote it in other case: it
   becomes ``<|``, ``endoftext``, ``|>``.) Python's
   `re` has no ``\\p{L}`` / ``\\p{N}`` (``[^\\W\\d_]`` would count ``²`` or ``½`` as letters),
   and the ``regex`` package is not a jgen dependency, so the pattern is a small scanner over
   `unicodedata.category`: letters are categories ``L*``, numbers ``N*``, and whitespace is
   Unicode's ``White_Space`` property (`_WHITESPACE`), as in the Oniguruma regexes of tokenizers.
4. **Bytes to symbols**: each piece's UTF-8 bytes map to printable characters (`bytes_to_unicode`:
   the printable Latin-1 bytes map to themselves, the other 68 to ``chr(256 + k)``), and the
   last symbol gets the end-of-word mark ``</w>``.
5. **BPE**: repeatedly merge the adjacent pair of lowest merge rank (all its occurrences, left
   to right) until no pair is a merge; each resulting symbol is one vocabulary id.

A batch (`__call__`) is ``[<|startoftext|>, t_1..t_n, <|endoftext|>, pad, ...]`` int32
``[B, 77]``, the content cut to 75 tokens so the end token always stays. The pad token is
``<|endoftext|>`` (49407) for SD 1.x and ``!`` (id 0) for SD 2.x (OpenCLIP's zero padding);
`from_folder` reads it from the pipeline's tokenizer files.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

__all__ = ["BOS", "EOS", "CLIPTokenizer", "bytes_to_unicode", "open_clip_vocab", "pre_tokenize"]

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
# Unicode's White_Space property (what \s matches in tokenizers' Oniguruma regexes).
_WHITESPACE = frozenset("\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
                        "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
_OPEN_CLIP_VOCAB = "bpe_simple_vocab_16e6.txt.gz"
_OPEN_CLIP_MERGES = 49152 - 256 - 2  # 48,894 merges: vocab = 2 * 256 bytes + merges + 2 = 49,408


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
  """Byte -> printable character: printable Latin-1 bytes to themselves, the rest to 256 + k.

  The dict's order is the vocabulary's: the 188 printable bytes in byte order (``!`` is id 0),
  then the other 68 in byte order.
  """
  keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
          *range(ord("®"), ord("ÿ") + 1)]
  rest = [b for b in range(256) if b not in keep]
  return {**{b: chr(b) for b in keep}, **{b: chr(256 + k) for k, b in enumerate(rest)}}


def _kind(ch: str) -> str:
  if ch in _WHITESPACE:
    return " "
  cat = unicodedata.category(ch)[0]
  return cat if cat in "LN" else "P"


def _normalize(text: str) -> str:
  text = unicodedata.normalize("NFC", text)
  out, space = [], False
  for ch in text:
    if ch in _WHITESPACE:
      space = True
      continue
    if space:
      out.append(" ")
      space = False
    out.append(ch.lower())
  if space:
    out.append(" ")
  return "".join(out)


def pre_tokenize(text: str) -> list[str]:
  """CLIP's pattern on normalised text: the pieces BPE runs on, in order (see step 3)."""
  pieces, i, n = [], 0, len(text)
  while i < n:
    ch = text[i]
    kind = _kind(ch)
    if kind == " ":
      i += 1
      continue
    special = next((s for s in (BOS, EOS) if text.startswith(s, i)), None)
    if special is not None:  # then split again by byte-level's GPT-2 pattern
      pieces.extend((special[:2], special[2:-2], special[-2:]))
      i += len(special)
      continue
    if ch == "'":
      contraction = next((c for c in _CONTRACTIONS if text.startswith(c, i)), None)
      if contraction is not None:
        pieces.append(contraction)
        i += len(contraction)
        continue
    j = i + 1
    if kind == "L" or kind == "P":
      while j < n and _kind(text[j]) == kind:
        j += 1
    pieces.append(text[i:j])
    i = j
  return pieces


def open_clip_vocab() -> tuple[list[str], list[tuple[str, str]]]:
  """(vocabulary by id, merges by rank) from open_clip's ``bpe_simple_vocab_16e6.txt.gz``.

  The file is found inside the installed ``open_clip`` package without importing it (open_clip
  imports torch). Its lines 1..48,894 are the merges; the vocabulary is the 256 byte symbols,
  the same with ``</w>``, the joined merges, then ``<|startoftext|>``, ``<|endoftext|>``:
  49,408 ids.

  Raises:
    FileNotFoundError: open_clip is not installed.
  """
  spec = importlib.util.find_spec("open_clip")
  folders = list(spec.submodule_search_locations or []) if spec else []
  path = next((os.path.join(d, _OPEN_CLIP_VOCAB) for d in folders
               if os.path.exists(os.path.join(d, _OPEN_CLIP_VOCAB))), None)
  if path is None:
    raise FileNotFoundError(f"CLIP's BPE vocabulary ({_OPEN_CLIP_VOCAB}) ships with open_clip, "
                            "which is not installed: `pip install --no-deps open_clip_torch` "
                            "(only the file is read; torch is not needed), or use "
                            "CLIPTokenizer.from_folder on a pipeline's tokenizer/ folder")
  with gzip.open(path, "rt", encoding="utf-8") as f:
    lines = f.read().split("\n")
  merges = [tuple(line.split()) for line in lines[1:_OPEN_CLIP_MERGES + 1]]
  symbols = list(bytes_to_unicode().values())
  vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [BOS, EOS]
  return vocab, merges


def _read_tokenizer_json(path: str) -> tuple[dict[str, int], list[tuple[str, str]]]:
  """The BPE vocabulary and merges of a `tokenizers` ``tokenizer.json`` (``model.vocab``,
  ``model.merges`` as "a b" strings or [a, b] pairs).

  Raises:
    ValueError: the file's model is not BPE.
  """
  with open(path, encoding="utf-8") as f:
    model = json.load(f).get("model", {})
  if model.get("type") != "BPE":
    raise ValueError(f"{path}: a {model.get('type')!r} tokenizer, not CLIP's BPE")
  merges = [tuple(m.split()) if isinstance(m, str) else tuple(m) for m in model["merges"]]
  return dict(model["vocab"]), merges


class CLIPTokenizer:
  """CLIP's BPE tokenizer (see the module docstring for the algorithm).

  Args:
    vocab: token -> id (49,408 entries for CLIP; ids 0..n-1).
    merges: BPE merges, rank = position.
    pad_token: the padding token (``"<|endoftext|>"`` SD 1.x, ``"!"`` SD 2.x).
    max_length: the padded length (77).

  Raises:
    ValueError: the pad or special tokens are not in the vocabulary.
  """

  def __init__(self, vocab: Mapping[str, int], merges: Iterable[Sequence[str]], *,
               pad_token: str = EOS, max_length: int = 77):
    self.encoder = dict(vocab)
    self.ranks = {tuple(m): r for r, m in enumerate(merges)}
    missing = [t for t in (BOS, EOS, pad_token) if t not in self.encoder]
    if missing:
      raise ValueError(f"tokens {missing} are not in the vocabulary; pad_token must be a "
                       "vocabulary token ('<|endoftext|>' for SD 1.x, '!' for SD 2.x)")
    if max_length < 2:
      raise ValueError(f"max_length={max_length} leaves no room for the start and end tokens")
    self.bos_id, self.eos_id = self.encoder[BOS], self.encoder[EOS]
    self.pad_token, self.pad_id = pad_token, self.encoder[pad_token]
    self.max_length = max_length
    self.added: dict[str, int] = {}
    self._added_ids: dict[str, int] = {}
    self._added_pattern: re.Pattern | None = None
    self._special = (BOS, EOS, pad_token)
    self._special_pattern = re.compile(
        "(" + "|".join(re.escape(t) for t in sorted(set(self._special), key=len, reverse=True))
        + ")")
    self._byte = bytes_to_unicode()
    self._cache: dict[str, list[int]] = {}

  @classmethod
  def from_open_clip(cls, pad_token: str = EOS, max_length: int = 77) -> CLIPTokenizer:
    """The vocabulary of open_clip's BPE file (see `open_clip_vocab`)."""
    vocab, merges = open_clip_vocab()
    return cls({t: i for i, t in enumerate(vocab)}, merges, pad_token=pad_token,
               max_length=max_length)

  @classmethod
  def from_spec(cls, where: str = "open_clip", *, pad_token: str = EOS) -> "CLIPTokenizer":
    """``"open_clip"`` (the wheel's vocabulary, padding with `pad_token`) or a tokenizer folder
    (`from_folder`, whose own files name the pad token): what ``config.text.tokenizer`` says."""
    if where == "open_clip":
      return cls.from_open_clip(pad_token=pad_token)
    return cls.from_folder(where)

  @classmethod
  def from_folder(cls, path: str) -> CLIPTokenizer:
    """A transformers / diffusers ``tokenizer/`` folder: ``vocab.json``, ``merges.txt``, the pad
    token and ``model_max_length`` from ``special_tokens_map.json`` / ``tokenizer_config.json``,
    and added tokens (``added_tokens.json``, ``added_tokens_decoder``) with their ids.

    Raises:
      FileNotFoundError: the folder lacks vocab.json or merges.txt.
      ValueError: added tokens whose ids do not follow the vocabulary.
    """
    files = {name: os.path.join(path, name) for name in ("vocab.json", "merges.txt")}
    lacking = [n for n, p in files.items() if not os.path.exists(p)]
    fast = os.path.join(path, "tokenizer.json")
    if lacking and os.path.exists(fast):  # transformers 5 saves only the `tokenizers` file
      vocab, merges = _read_tokenizer_json(fast)
    elif lacking:
      raise FileNotFoundError(f"{path} lacks {lacking} (and tokenizer.json): not a CLIP "
                              "tokenizer folder (a pipeline keeps it in its tokenizer/ "
                              "subfolder)")
    else:
      with open(files["vocab.json"], encoding="utf-8") as f:
        vocab = json.load(f)
      with open(files["merges.txt"], encoding="utf-8") as f:
        merges = [tuple(line.split()) for line in f.read().split("\n")
                  if line and not line.startswith("#version")]
    settings: dict = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):  # the map wins
      if os.path.exists(os.path.join(path, name)):
        with open(os.path.join(path, name), encoding="utf-8") as f:
          settings.update({k: v for k, v in json.load(f).items() if v is not None})
    pad = settings.get("pad_token", EOS)
    pad = pad["content"] if isinstance(pad, dict) else pad
    length = settings.get("model_max_length", 77)
    tok = cls(vocab, merges, pad_token=pad, max_length=int(length) if length < 1e6 else 77)
    added = {}
    if os.path.exists(os.path.join(path, "added_tokens.json")):
      with open(os.path.join(path, "added_tokens.json"), encoding="utf-8") as f:
        added.update(json.load(f))
    for i, entry in settings.get("added_tokens_decoder", {}).items():
      added.setdefault(entry["content"], int(i))
    extra = sorted((i, t) for t, i in added.items() if t not in vocab)
    if [i for i, _ in extra] != list(range(len(vocab), len(vocab) + len(extra))):
      raise ValueError(f"{path}: added tokens {extra} do not take the ids after the "
                       f"{len(vocab)}-token vocabulary")
    tok.add_tokens([t for _, t in extra])
    return tok

  @property
  def vocab_size(self) -> int:
    """Ids in use, added tokens included (the token embedding's rows)."""
    return len(self.encoder) + len(self.added)

  def __len__(self) -> int:
    return self.vocab_size

  def add_tokens(self, tokens: Sequence[str]) -> list[int]:
    """Appends whole tokens (textual-inversion placeholders such as ``"<cat-toy>"``).

    Each is matched in the normalised prompt before BPE (longest first, also inside words, as
    transformers' added tokens are) and becomes one id. Tokens already in the vocabulary keep
    their id.

    Returns:
      the id of each token.
    """
    ids = []
    for token in tokens:
      if not token or _normalize(token).strip() == "":
        raise ValueError(f"cannot add the blank token {token!r}")
      if token in self.encoder:
        ids.append(self.encoder[token])
        continue
      if token not in self.added:
        self.added[token] = len(self.encoder) + len(self.added)
      ids.append(self.added[token])
    forms = sorted({_normalize(t): i for t, i in self.added.items()}.items(),
                   key=lambda kv: -len(kv[0]))
    self._added_ids = dict(forms)
    self._added_pattern = (re.compile("|".join(re.escape(f) for f, _ in forms))
                           if forms else None)
    return ids

  def _bpe(self, piece: str) -> list[int]:
    if piece in self._cache:
      return self._cache[piece]
    symbols = "".join(self._byte[b] for b in piece.encode("utf-8"))
    word = [*symbols[:-1], symbols[-1] + "</w>"]
    while len(word) > 1:
      pairs = {(a, b) for a, b in zip(word[:-1], word[1:])}
      best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
      if best not in self.ranks:
        break
      merged, i = [], 0
      while i < len(word):
        if i < len(word) - 1 and (word[i], word[i + 1]) == best:
          merged.append(word[i] + word[i + 1])
          i += 2
        else:
          merged.append(word[i])
          i += 1
      word = merged
    ids = [self.encoder.get(s, self.eos_id) for s in word]
    self._cache[piece] = ids
    return ids

  def _encode_normalized(self, text: str) -> list[int]:
    ids = []
    for piece in pre_tokenize(text):
      ids.extend(self._bpe(piece))
    return ids

  def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
    """One prompt -> its ids, ``[<|startoftext|>, ..., <|endoftext|>]``, not padded or cut."""
    ids = []
    for part in self._special_pattern.split(text):
      if part in self._special:
        ids.append(self.encoder[part])
        continue
      norm = _normalize(part)
      start = 0
      if self._added_pattern is not None:
        for m in self._added_pattern.finditer(norm):
          ids.extend(self._encode_normalized(norm[start:m.start()]))
          ids.append(self._added_ids[m.group()])
          start = m.end()
      ids.extend(self._encode_normalized(norm[start:]))
    return [self.bos_id, *ids, self.eos_id] if add_special_tokens else ids

  def __call__(self, prompts: str | Sequence[str]) -> np.ndarray:
    """Prompts -> int32 ``[B, max_length]``: start, content cut to max_length - 2, end, pads."""
    if isinstance(prompts, str):
      prompts = [prompts]
    out = np.full((len(prompts), self.max_length), self.pad_id, np.int32)
    for row, prompt in enumerate(prompts):
      ids = self.encode(prompt, add_special_tokens=False)[:self.max_length - 2]
      out[row, :len(ids) + 2] = [self.bos_id, *ids, self.eos_id]
    return out
