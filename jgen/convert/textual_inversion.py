"""Textual-inversion embeddings (diffusers and Automatic1111 files) in and out of jgen's CLIP.

A textual-inversion embedding is n learned rows e_1..e_n (each of CLIP's width D) for a new
placeholder token. Applying it appends n tokens to the tokenizer and n rows to the text model's
token embedding table E ``[V, D]``: ``E' = [E; e_1; ...; e_n]``, the new tokens taking ids
V..V+n-1. Nothing else in the model changes.

**Files** (`read_embedding` -> ``{token: array [n, D]}``):

* diffusers ``learned_embeds.safetensors`` / ``.bin``: one entry ``{token: [D] or [n, D]}``;
  the token is the entry's name.
* Automatic1111 ``.pt``: ``{"string_to_param": {"*": [n, D]}, "name": ..., "step": ...}`` (read
  with jgen's restricted unpickler, which never runs code); A1111 ``.safetensors``:
  ``{"emb_params": [n, D]}``.

**The token.** ``token=`` given wins (diffusers' ``load_textual_inversion(path, token=...)``).
Otherwise a diffusers file's entry name; an A1111 ``.pt`` file's ``name`` field (what diffusers
uses), or the file's stem when it has none; an ``emb_params`` file's stem. (Automatic1111 itself
always triggers on the file's stem: pass ``token=`` to get its behaviour.)

**Several vectors** become the tokens ``token``, ``token_1``, ..., ``token_{n-1}`` (diffusers'
rule), and a prompt that writes ``token`` must be expanded to ``"token token_1 ... token_{n-1}"``
before tokenizing (`expand_prompt`, diffusers' ``maybe_convert_prompt``).

SDXL embeddings (``clip_l`` / ``clip_g``: one per text encoder) are refused by name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from jgen.convert.files import read_state_dict
from jgen.metrics.weights import read_torch_file

__all__ = ["apply_embedding", "embeddings_of", "expand_prompt", "export_embedding",
           "read_embedding", "vector_tokens"]

EMBEDDING_PATH = "token_embedding/embedding"


def _as_rows(value: Any, where: str) -> np.ndarray:
  rows = np.asarray(value, np.float32)
  if rows.ndim == 1:
    rows = rows[None]
  if rows.ndim != 2 or rows.shape[0] < 1:
    raise ValueError(f"{where}: an embedding is [D] or [n, D], got shape {rows.shape}")
  return rows


def _stem(path: str) -> str:
  return os.path.basename(path).split(".", 1)[0]


def _from_mapping(obj: Mapping[str, Any], path: str, token: str | None) -> dict[str, np.ndarray]:
  if "clip_l" in obj or "clip_g" in obj:
    raise ValueError(f"{path}: an SDXL embedding (clip_l / clip_g, one per text encoder); jgen "
                     "converts SD 1.x / 2.x text encoders only")
  if "string_to_param" in obj:  # Automatic1111
    params = obj["string_to_param"]
    if not isinstance(params, Mapping) or "*" not in params:
      raise ValueError(f"{path}: an A1111 embedding whose string_to_param lacks '*'")
    name = obj.get("name")
    return {token or (name if isinstance(name, str) and name else _stem(path)):
            _as_rows(params["*"], path)}
  if "string_to_param.*" in obj:  # an A1111 dict flattened by the reader
    return {token or _stem(path): _as_rows(obj["string_to_param.*"], path)}
  if "emb_params" in obj:
    return {token or _stem(path): _as_rows(obj["emb_params"], path)}
  arrays = {k: v for k, v in obj.items() if not isinstance(v, (str, int, float))}
  if len(arrays) != 1:
    raise ValueError(f"{path}: a diffusers embedding holds one {{token: vectors}} entry, this "
                     f"file holds {sorted(arrays)[:8]}; not a textual-inversion file?")
  (name, value), = arrays.items()
  return {token or name: _as_rows(value, path)}


def read_embedding(path: str, token: str | None = None) -> dict[str, np.ndarray]:
  """``{token: vectors [n, D]}`` of a textual-inversion file (token rule: module docstring).

  Raises:
    FileNotFoundError: no such file.
    ValueError: not a textual-inversion file, or an SDXL one.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no textual-inversion file at {path}")
  if path.endswith((".pt", ".bin", ".pth", ".ckpt")):
    obj = read_torch_file(path)
    if not isinstance(obj, Mapping):
      raise ValueError(f"{path}: holds a {type(obj).__name__}, not a dict of embeddings")
    return _from_mapping(obj, path, token)
  return _from_mapping(read_state_dict(path), path, token)


def vector_tokens(token: str, n: int) -> list[str]:
  """The tokens of an n-vector embedding: ``[token, token_1, ..., token_{n-1}]``."""
  return [token] + [f"{token}_{i}" for i in range(1, n)]


def expand_prompt(prompt: str, embeddings: Mapping[str, np.ndarray]) -> str:
  """Writes each multi-vector token as its n tokens (``"a <cat> toy"`` -> ``"a <cat> <cat>_1
  toy"``), as diffusers' ``maybe_convert_prompt`` does before tokenizing."""
  for token in sorted(embeddings, key=len, reverse=True):
    n = np.shape(embeddings[token])[0] if np.ndim(embeddings[token]) == 2 else 1
    if n > 1:
      prompt = re.sub(re.escape(token) + r"(?!_\d)", " ".join(vector_tokens(token, n)), prompt)
  return prompt


def apply_embedding(text_params: Mapping[str, Any], tokenizer: Any,
                    embeddings: Mapping[str, np.ndarray]) -> tuple[Any, dict[str, list[int]]]:
  """Adds the embeddings' tokens to `tokenizer` and their rows to the token embedding table.

  The tokenizer (`jgen.nn.clip_tokenizer.CLIPTokenizer`) is changed in place (`add_tokens`); the
  table becomes ``tokenizer.vocab_size`` rows: the old rows, then each new token's vector at its
  id. The text model must then be built with that ``vocab_size``
  (``model.clone(vocab_size=tokenizer.vocab_size)``).

  Args:
    text_params: the converted CLIP text model's parameters (``{"params": tree}`` or the tree).
    tokenizer: its tokenizer.
    embeddings: `read_embedding`'s result (several files: merge the dicts).

  Returns:
    (the parameters with the longer table, {token: the ids of its vectors}).

  Raises:
    ValueError: a token already in the tokenizer (as diffusers refuses it), or vectors whose
      width is not the table's.
  """
  wrapped = set(text_params) == {"params"}
  tree = text_params["params"] if wrapped else text_params
  table = np.asarray(tree["token_embedding"]["embedding"])
  tokens: dict[str, list[str]] = {}
  for token, vectors in embeddings.items():
    vectors = _as_rows(vectors, token)
    if vectors.shape[1] != table.shape[1]:
      raise ValueError(f"embedding {token!r} has width {vectors.shape[1]}, the text model "
                       f"{table.shape[1]}: it was trained for another text encoder (SD 1.x is "
                       "768 wide, SD 2.x 1024)")
    names = vector_tokens(token, vectors.shape[0])
    taken = [t for t in names if t in tokenizer.encoder or t in tokenizer.added]
    if taken:
      raise ValueError(f"tokens {taken} are already in the tokenizer; load the embedding under "
                       "another token (read_embedding(path, token=...))")
    tokens[token] = names
  ids = {token: tokenizer.add_tokens(names) for token, names in tokens.items()}
  rows = tokenizer.vocab_size
  new = np.zeros((rows, table.shape[1]), table.dtype)
  keep = min(rows, table.shape[0])
  new[:keep] = table[:keep]
  for token, token_ids in ids.items():
    new[token_ids] = _as_rows(embeddings[token], token).astype(table.dtype)
  embedding = {**tree["token_embedding"], "embedding": new}
  tree = {**tree, "token_embedding": embedding}
  return ({"params": tree} if wrapped else tree), ids


def export_embedding(token: str, vectors: Any, path: str) -> None:
  """Writes diffusers' ``learned_embeds.safetensors``: ``{token: vectors [n, D]}`` float32.

  Raises:
    ImportError: the safetensors package is missing.
  """
  rows = np.ascontiguousarray(_as_rows(vectors, token))
  save_file({token: rows}, path, metadata={"format": "pt"})


def embeddings_of(text_params: Mapping[str, Any], tokenizer: Any,
                  tokens: Sequence[str]) -> dict[str, np.ndarray]:
  """The rows of trained placeholder tokens, ``{token: [n, D]}`` (each with its ``_i`` tokens),
  ready for `export_embedding`."""
  tree = text_params["params"] if set(text_params) == {"params"} else text_params
  table = np.asarray(tree["token_embedding"]["embedding"])
  out = {}
  for token in tokens:
    names = [token]
    while f"{token}_{len(names)}" in tokenizer.added:
      names.append(f"{token}_{len(names)}")
    ids = [tokenizer.added.get(t, tokenizer.encoder.get(t)) for t in names]
    if ids[0] is None:
      raise ValueError(f"token {token!r} is not in the tokenizer")
    out[token] = table[ids]
  return out
