"""Community LoRA files (peft/diffusers and kohya) in and out of jgen's Stable Diffusion models.

**The update.** A LoRA module holds, in torch's layout, ``down`` (A) ``[r, d_in]`` (a k x k
convolution: ``[r, c_in, k, k]``) and ``up`` (B) ``[d_out, r]`` (``[c_out, r, 1, 1]``), and a
scalar alpha. The torch weight W ``[d_out, d_in]`` becomes

    W' = W + scale * (alpha / r) * up @ down

(for a convolution, ``up`` applied as a 1 x 1 convolution after ``down``:
``W'[o, i, h, w] = W + scale (alpha / r) sum_j up[o, j] down[j, i, h, w]``). ``scale`` is
diffusers' ``lora_scale`` (``cross_attention_kwargs={"scale": s}``). In jgen's layout the kernel
is ``W^T`` (Dense ``[d_in, d_out]``, Conv ``[k, k, c_in, c_out]`` viewed as ``[k k c_in,
c_out]``), so the update is ``(alpha / r) A B`` with A = ``down`` as ``[k k c_in, r]``
(``down.transpose(2, 3, 1, 0)`` flattened) and B = ``up^T`` ``[r, c_out]``: exactly
`jgen.nn.lora.Lora`'s ``W + (alpha / r) A B``.

**Formats** (`read_lora` tells them apart by their names):

* peft / diffusers: ``unet.<module>.lora_A.weight`` / ``lora_B.weight`` (``text_encoder.`` for
  the CLIP text model, no prefix in a model-level ``save_lora_adapter`` file); older spellings
  ``.lora.down.weight`` / ``.lora.up.weight``, ``.lora_linear_layer.down.weight`` and the
  attention processors' ``attn1.processor.to_q_lora.down.weight`` are read too. alpha: the
  safetensors header's ``lora_adapter_metadata`` JSON (peft's ``LoraConfig``: ``lora_alpha``,
  ``r``, ``alpha_pattern``, ``use_rslora``; keys prefixed ``unet.`` / ``text_encoder.`` in a
  pipeline file), else a per-module ``.alpha`` tensor, else alpha = r (what diffusers assumes:
  scale 1). A pattern of ``alpha_pattern`` matches a module name as peft matches it:
  ``re.match(rf"(.*\\.)?({pattern})$", name)``, first pattern first. rsLoRA's alpha / sqrt(r) is
  stored as the alpha ``alpha sqrt(r)``.
* kohya (sd-scripts): ``lora_unet_<module with "." -> "_">.lora_down.weight`` / ``lora_up.weight``
  / ``.alpha`` per module, ``lora_te_`` for the text encoder; a module without ``.alpha`` has
  alpha = r. The underscore names are resolved against the model's own module names (`unet_modules`,
  `text_modules`), not by guessing where the dots were.

SDXL files (``lora_te1_`` / ``lora_te2_``, ``text_encoder_2.``) and LyCORIS kinds (LoHa
``hada_``, LoKr ``lokr_``, Tucker ``lora_mid``, full ``.diff``, DoRA ``dora_scale`` /
``lora_magnitude_vector``, OFT / BOFT) are refused by name.

**Names.** U-Net modules are diffusers names (``down_blocks.1.attentions.0.transformer_blocks.0.
attn1.to_q``) mapped to jgen kernel paths by `jgen.convert.unet.fill_unet`, the converter's own
table, so anything the converter maps a LoRA can target: attention projections, ``proj_in``
(a 1 x 1 convolution in SD 1.x, Linear in SD 2.x: both are jgen's Dense ``proj_in``),
feed-forward, ResNet convolutions (kohya LoCon), time-embedding projections, resamplers. Text
encoder modules: ``text_model.encoder.layers.{i}.self_attn.{q,k,v,out}_proj`` and ``mlp.fc1|2``
-> ``layers_{i}/self_attn/..``, ``layers_{i}/mlp/..`` (`jgen.convert.clip`'s table).

Two uses: `merge_lora` folds a file into converted weights (sampling with a community LoRA);
`lora_to_jgen_adapters` turns it into jgen adapters and a `Lora` (resuming training). A
`LoraFile` is written by `save_peft` / `save_kohya` (needs the ``safetensors`` package); jgen's
own adapters become one in `jgen.convert.lora_export`.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import re
import types
from collections.abc import Mapping
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from jgen import errors
from jgen.convert.common import AnyName, StateDict, Tree, flatten_tree, unflatten_tree
from jgen.convert.files import read_state_dict
from jgen.convert.unet import fill_unet
from jgen.nn.lora import A, B, KERNEL, Lora

__all__ = ["COMPONENTS", "LoraFile", "LoraFormatError", "LoraModule", "lora_to_jgen_adapters",
           "merge_lora", "module_map", "read_lora", "save_kohya", "save_peft", "text_modules",
           "unet_modules"]

COMPONENTS = ("unet", "text_encoder")
METADATA_KEY = "lora_adapter_metadata"
_KOHYA_PREFIX = {"lora_unet_": "unet", "lora_te_": "text_encoder"}
_LYCORIS = {"hada_": "LoHa", "lokr_": "LoKr", "lora_mid": "LoCon/LoHa Tucker (lora_mid)",
            "dora_scale": "DoRA", "lora_magnitude_vector": "DoRA", "oft_": "OFT",
            "boft_": "BOFT", ".diff": "full-weight difference (.diff)",
            ".w_norm": "norm (LyCORIS)", ".b_norm": "norm (LyCORIS)"}
# (suffix of the down name, suffix of the up name); peft first. The module name is the rest.
_PEFT_PAIRS = ((".lora_A.weight", ".lora_B.weight"), (".lora.down.weight", ".lora.up.weight"),
               (".lora_linear_layer.down.weight", ".lora_linear_layer.up.weight"),
               ("_lora.down.weight", "_lora.up.weight"))
_KOHYA_PAIR = (".lora_down.weight", ".lora_up.weight")
# diffusers' old attention-processor names -> module names.
_PROCESSOR = {"processor.to_q": "to_q", "processor.to_k": "to_k", "processor.to_v": "to_v",
              "processor.to_out": "to_out.0", "self_attn.to_q": "self_attn.q_proj",
              "self_attn.to_k": "self_attn.k_proj", "self_attn.to_v": "self_attn.v_proj",
              "self_attn.to_out": "self_attn.out_proj"}
_CLIP_KERNEL = re.compile(r"layers_(\d+)/(self_attn|mlp)/(\w+)/kernel")


class LoraFormatError(errors.ConversionError):
  """A LoRA file jgen cannot read or apply (a LyCORIS kind, SDXL, unknown names)."""


@dataclasses.dataclass(frozen=True)
class LoraModule:
  """One adapted module, in torch's layout.

  Attributes:
    down: A, ``[r, d_in]`` or ``[r, c_in, k, k]``.
    up: B, ``[d_out, r]`` or ``[d_out, r, 1, 1]``.
    alpha: the update is (alpha / r) up @ down.
  """

  down: np.ndarray
  up: np.ndarray
  alpha: float

  @property
  def rank(self) -> int:
    return int(self.down.shape[0])

  @property
  def scale(self) -> float:
    """alpha / r."""
    return self.alpha / self.rank


@dataclasses.dataclass
class LoraFile:
  """A LoRA file's modules, per component (``"unet"``, ``"text_encoder"``).

  Attributes:
    format: ``"peft"`` or ``"kohya"`` (where the file came from; either can be saved as either).
    modules: component -> {module name -> `LoraModule`}. peft names are diffusers / transformers
      module paths (``down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q``); kohya names
      keep their underscores until resolved against a model (`unet_modules`).
    metadata: the safetensors header's ``__metadata__`` strings.
  """

  format: str
  modules: dict[str, dict[str, LoraModule]]
  metadata: dict[str, str] = dataclasses.field(default_factory=dict)

  def component(self, name: str) -> dict[str, LoraModule]:
    """The modules of one component (empty when the file has none)."""
    if name not in COMPONENTS:
      raise ValueError(f"unknown LoRA component {name!r}; known: {COMPONENTS}")
    return self.modules.get(name, {})


# --- reading -------------------------------------------------------------------------------


def _refuse_kinds(names: list[str], path: str) -> None:
  for name in names:
    for marker, kind in _LYCORIS.items():
      if marker in name:
        raise LoraFormatError(
            f"{path}: {name!r} is a {kind} tensor; jgen reads plain LoRA only (peft/diffusers "
            "lora_A/lora_B, kohya lora_down/lora_up). Merge it into the base weights with "
            "LyCORIS's own tools, or use a plain LoRA.")
    if name.startswith(("lora_te1_", "lora_te2_", "text_encoder_2.")):
      raise LoraFormatError(f"{path}: {name!r} is an SDXL LoRA name (two text encoders); jgen "
                            "converts SD 1.x / 2.x models only")
    if name.startswith(("lora_unet_input_blocks", "lora_unet_output_blocks",
                        "lora_unet_middle_block")):
      raise LoraFormatError(f"{path}: {name!r} uses the LDM/sgm U-Net's names (input_blocks, "
                            "output_blocks: SDXL files, or an SD 1.x file from an LDM-based "
                            "trainer); jgen resolves diffusers-named kohya files only")


def _peft_config(metadata: Mapping[str, str], component: str) -> dict[str, Any] | None:
  raw = metadata.get(METADATA_KEY)
  if not raw:
    return None
  config = json.loads(raw)
  mine = {k[len(component) + 1:]: v for k, v in config.items() if k.startswith(component + ".")}
  prefixed = any(k.startswith(tuple(c + "." for c in COMPONENTS)) for k in config)
  config = mine if prefixed else config
  if config.get("use_dora"):
    raise LoraFormatError("the file's LoraConfig has use_dora=True: DoRA is not plain LoRA; "
                          "jgen does not read it")
  return config or None


def _pattern_value(patterns: Mapping[str, Any], name: str) -> Any:
  for key, value in patterns.items():
    if re.match(rf"(.*\.)?({key})$", name):
      return value
  return None


def _peft_alpha(config: Mapping[str, Any] | None, name: str, rank: int) -> float | None:
  if config is None:
    return None
  alpha = _pattern_value(config.get("alpha_pattern") or {}, name)
  alpha = float(config.get("lora_alpha", config.get("r", rank)) if alpha is None else alpha)
  return alpha * math.sqrt(rank) if config.get("use_rslora") else alpha


def _split_component(name: str) -> tuple[str, str]:
  for component in COMPONENTS:
    if name.startswith(component + "."):
      return component, name[len(component) + 1:]
  # a model-level file (diffusers' save_lora_adapter) has no prefix; CLIP's names say text.
  text = name.startswith(("text_model.", "encoder.layers."))
  return ("text_encoder" if text else "unet"), name


def _module_name(name: str) -> str:
  for old, new in _PROCESSOR.items():
    if name.endswith(old):
      return name[:-len(old)] + new
  return name


def _read_peft(state: Mapping[str, Any], metadata: Mapping[str, str], path: str) -> LoraFile:
  names = set(state)
  modules: dict[str, dict[str, LoraModule]] = {}
  used: set[str] = set()
  for name in sorted(names):
    pair = next((p for p in _PEFT_PAIRS if name.endswith(p[0])), None)
    if pair is None:
      continue
    stem = name[:-len(pair[0])]
    up = stem + pair[1]
    if up not in names:
      raise LoraFormatError(f"{path}: {name!r} has no matching {up!r}")
    component, module = _split_component(stem)
    module = _module_name(module)
    down_w, up_w = np.asarray(state[name], np.float32), np.asarray(state[up], np.float32)
    rank = int(down_w.shape[0])
    alpha = _peft_alpha(_peft_config(metadata, component), module, rank)
    used.update((name, up))
    for alpha_name in (stem + ".alpha", stem.removesuffix(".lora") + ".alpha"):
      if alpha_name in names:
        used.add(alpha_name)
        alpha = _scalar(state[alpha_name]) if alpha is None else alpha
    modules.setdefault(component, {})[module] = LoraModule(down_w, up_w,
                                                           float(rank if alpha is None else alpha))
  _check_all_used(names, used, path)
  return LoraFile("peft", modules, dict(metadata))


def _read_kohya(state: Mapping[str, Any], metadata: Mapping[str, str], path: str) -> LoraFile:
  names = set(state)
  modules: dict[str, dict[str, LoraModule]] = {}
  used: set[str] = set()
  for name in sorted(names):
    if not name.endswith(_KOHYA_PAIR[0]):
      continue
    stem = name[:-len(_KOHYA_PAIR[0])]
    prefix = next((p for p in _KOHYA_PREFIX if stem.startswith(p)), None)
    if prefix is None:
      raise LoraFormatError(f"{path}: kohya name {name!r} starts with none of "
                            f"{sorted(_KOHYA_PREFIX)}")
    up = stem + _KOHYA_PAIR[1]
    if up not in names:
      raise LoraFormatError(f"{path}: {name!r} has no matching {up!r}")
    down_w, up_w = np.asarray(state[name], np.float32), np.asarray(state[up], np.float32)
    alpha = float(down_w.shape[0])
    used.update((name, up))
    if stem + ".alpha" in names:
      alpha = _scalar(state[stem + ".alpha"])
      used.add(stem + ".alpha")
    component = _KOHYA_PREFIX[prefix]
    modules.setdefault(component, {})[stem[len(prefix):]] = LoraModule(down_w, up_w, alpha)
  _check_all_used(names, used, path)
  return LoraFile("kohya", modules, dict(metadata))


def _scalar(value: Any) -> float:
  """A stored alpha: a 0-d tensor in kohya's files, a [1] one from some writers."""
  return float(np.asarray(value, np.float32).reshape(-1)[0])


def _check_all_used(names: set[str], used: set[str], path: str) -> None:
  left = sorted(names - used)
  if left:
    raise LoraFormatError(f"{path}: {len(left)} tensors are not LoRA down/up/alpha tensors jgen "
                          f"knows: {left[:10]}{' ...' if len(left) > 10 else ''}")


def read_lora(path: str) -> LoraFile:
  """A peft/diffusers or kohya LoRA file (``.safetensors``, ``.bin``, ``.pt``; see the module
  docstring for the names and the alpha rules).

  Raises:
    LoraFormatError: a LyCORIS kind, an SDXL file, unpaired or unknown tensors.
  """
  state = read_state_dict(path)
  metadata = dict(getattr(state, "metadata", {}) or {})
  names = list(state)
  _refuse_kinds(names, path)
  if any(n.startswith(tuple(_KOHYA_PREFIX)) for n in names):
    return _read_kohya(state, metadata, path)
  if any(n.endswith(pair[0]) for n in names for pair in _PEFT_PAIRS):
    return _read_peft(state, metadata, path)
  raise LoraFormatError(f"{path}: no LoRA tensors (names end in .lora_A.weight, "
                        f".lora.down.weight or start with lora_unet_ / lora_te_); first names: "
                        f"{names[:5]}")


# --- names ---------------------------------------------------------------------------------


def _unwrap(params: Mapping[str, Any]) -> Mapping[str, Any]:
  return params["params"] if set(params) == {"params"} else params


def _unet_layout(flat: Mapping[str, Any]) -> types.SimpleNamespace:
  """The `fill_unet` fields of a converted U-Net, read from its parameter paths."""
  tops = {p.split("/", 1)[0] for p in flat}
  levels = 1 + max((int(m.group(1)) for t in tops if (m := re.fullmatch(r"down_(\d+)_.*", t))),
                   default=-1)
  if not levels or "mid_attn_1" not in tops:
    raise LoraFormatError("these parameters are not a converted diffusers U-Net (no down_0_* or "
                          "mid_attn_1); pass the U-Net's own parameters")
  blocks = sum(1 for t in tops if re.fullmatch(r"down_0_block_\d+", t))
  attn = tuple(l for l in range(levels) if f"down_{l}_block_0_attn" in tops)
  depth = len({p.split("/")[1] for p in flat if re.fullmatch(r"mid_attn_1/block_\d+/.*", p)})
  return types.SimpleNamespace(attention="transformer" if depth else "ddpm",
                               transformer_depth=depth, ch_mult=(1,) * levels,
                               num_res_blocks=blocks, attn_levels=attn)


def unet_modules(params: Mapping[str, Any]) -> dict[str, str]:
  """diffusers module name -> jgen kernel path, for every kernel of a converted U-Net.

  Built by running `jgen.convert.unet.fill_unet`'s table on the U-Net's own layout (levels,
  blocks, attention levels, transformer depth, read from `params`), so it is the converter's map.
  """
  flat = flatten_tree(_unwrap(params))
  tree = Tree(StateDict(AnyName()))
  fill_unet(tree, _unet_layout(flat))
  return {name[:-len(".weight")]: path for path, name in tree.origin.items()
          if path.endswith("/" + KERNEL) and path in flat}


def text_modules(params: Mapping[str, Any]) -> dict[str, str]:
  """transformers module name -> jgen kernel path for a converted CLIP text model."""
  flat = flatten_tree(_unwrap(params))
  out = {}
  for path in flat:
    m = _CLIP_KERNEL.fullmatch(path)
    if m:
      out[f"text_model.encoder.layers.{m.group(1)}.{m.group(2)}.{m.group(3)}"] = path
  if not out:
    raise LoraFormatError("these parameters are not a converted CLIP text model (no "
                          "layers_{i}/self_attn/*/kernel); pass the text encoder's parameters")
  return out


def module_map(params: Mapping[str, Any], component: str) -> dict[str, str]:
  """diffusers / transformers module name -> jgen kernel path of one component's parameters."""
  return unet_modules(params) if component == "unet" else text_modules(params)


def _resolve(lora_file: LoraFile, params: Mapping[str, Any], component: str
             ) -> dict[str, tuple[str, LoraModule]]:
  """{jgen kernel path: (module name, module)} of one component; every module must resolve."""
  modules = lora_file.component(component)
  if not modules:
    return {}
  table = module_map(params, component)
  underscored = {name.replace(".", "_"): name for name in table}
  out, unknown = {}, []
  for name, module in modules.items():
    # transformers 5 names the CLIP text model's modules without "text_model." (and so does a
    # file trained on it); the table keeps transformers 4's names, which published files use.
    tries = (name, "text_model." + name) if component == "text_encoder" else (name,)
    full = next((t if t in table else underscored.get(t.replace(".", "_")) for t in tries
                 if t in table or t.replace(".", "_") in underscored), None)
    if full is None:
      unknown.append(name)
    else:
      out[table[full]] = (full, module)
  if unknown:
    raise LoraFormatError(
        f"{len(unknown)} {component} LoRA modules match no module of this model: "
        f"{sorted(unknown)[:8]}; the model's modules look like {sorted(table)[:4]}. Was the LoRA "
        "trained for another architecture (SDXL, a model with more blocks)?")
  return out


def _jgen_pair(module: LoraModule, kernel_shape: tuple[int, ...], where: str
               ) -> tuple[np.ndarray, np.ndarray]:
  """(A [fan_in, r], B [r, d_out]) in jgen's layout for a kernel of `kernel_shape`."""
  down, up = module.down, module.up
  if up.ndim == 4:
    if up.shape[2:] != (1, 1):
      raise LoraFormatError(f"{where}: up weight {up.shape} is not a 1x1 convolution")
    up = up[:, :, 0, 0]
  if down.ndim == 4:
    if len(kernel_shape) == 2 and down.shape[2:] != (1, 1):
      raise LoraFormatError(f"{where}: a {down.shape[2:]} convolution LoRA on a Dense kernel")
    a = down.transpose(2, 3, 1, 0).reshape(-1, down.shape[0])
  else:
    a = down.T
  b = up.T
  if math.prod(kernel_shape[:-1]) != a.shape[0] or b.shape[1] != kernel_shape[-1]:
    raise LoraFormatError(f"{where}: LoRA down {module.down.shape} / up {module.up.shape} do not "
                          f"fit the kernel {tuple(kernel_shape)}; another model's LoRA?")
  return np.ascontiguousarray(a, np.float32), np.ascontiguousarray(b, np.float32)


# --- using it ------------------------------------------------------------------------------


def merge_lora(params: Mapping[str, Any], lora_file: LoraFile, scale: float = 1.0, *,
               component: str = "unet") -> Any:
  """`params` with one component's LoRA folded in: W + scale (alpha / r) A B per module.

  Args:
    params: the converted model's parameters (``{"params": tree}`` or the tree), the U-Net's
      for ``component="unet"``, the CLIP text model's for ``"text_encoder"``.
    lora_file: `read_lora`'s result.
    scale: diffusers' ``lora_scale``.
    component: which of the file's components to merge.

  Returns:
    the same structure with the adapted kernels replaced (in their dtype).

  Raises:
    LoraFormatError: a module the model lacks or whose shapes do not fit.
  """
  wrapped = set(params) == {"params"}
  flat = flatten_tree(_unwrap(params))
  for path, (name, module) in _resolve(lora_file, params, component).items():
    w = np.asarray(flat[path])
    a, b = _jgen_pair(module, w.shape, name)
    delta = (scale * module.scale) * (a @ b)
    flat[path] = (w.astype(np.float32) + delta.reshape(w.shape)).astype(w.dtype)
  tree = unflatten_tree(flat)
  return {"params": tree} if wrapped else tree


def lora_to_jgen_adapters(lora_file: LoraFile, params: Mapping[str, Any], *,
                          component: str = "unet", prefix: str = ""
                          ) -> tuple[dict[str, Any], Lora]:
  """jgen adapters (`jgen.nn.lora` layout) and the `Lora` that merges them as the file does.

  jgen's `Lora` has one rank r and one alpha; a file may give each module its own (r_m,
  alpha_m). The `Lora` takes the most common (r, alpha) pair, and every other module's ratio is
  folded into its B: ``B_m <- B_m (alpha_m / r_m) / (alpha / r)``, so ``Lora.merge`` gives each
  kernel W + (alpha_m / r_m) A_m B_m. A and B keep each module's own rank (`Lora.merge` accepts
  any inner dimension). ``targets`` is an anchored alternation of the adapted module paths.

  ``prefix`` puts the adapters (and the targets) under a key of a larger tree: ``"unet"`` for
  `jgen.diffusion.stable_diffusion`'s ``params = {"unet": ...}``, whose stored ``lora``
  subtree is then ``{"unet": <adapters>}``.

  Raises:
    LoraFormatError: the component is empty, or modules the model lacks.
  """
  resolved = _resolve(lora_file, params, component)
  if not resolved:
    raise LoraFormatError(f"the LoRA file has no {component} modules")
  flat = flatten_tree(_unwrap(params))
  rank, alpha = collections.Counter((m.rank, m.alpha) for _, m in resolved.values()
                                    ).most_common(1)[0][0]
  common = alpha / rank
  out = {}
  for path, (name, module) in resolved.items():
    a, b = _jgen_pair(module, np.shape(flat[path]), name)
    where = f"{prefix}/{path}" if prefix else path
    out[f"{where}/{A}"] = a
    out[f"{where}/{B}"] = b * np.float32(module.scale / common)
  modules = sorted((f"{prefix}/{p}" if prefix else p)[:-len("/" + KERNEL)] for p in resolved)
  targets = "^(?:" + "|".join(re.escape(m) for m in modules) + ")$"
  return unflatten_tree(out), Lora(rank=rank, targets=targets, alpha=float(alpha))


# --- writing -------------------------------------------------------------------------------


def _save(tensors: dict[str, np.ndarray], path: str, metadata: dict[str, str]) -> None:
  # (np.ascontiguousarray would make a 0-d alpha 1-d)
  save_file({k: np.require(v, requirements="C") for k, v in tensors.items()}, path,
            metadata=metadata)


def _dtype(x: np.ndarray, dtype: Any) -> np.ndarray:
  return np.asarray(x, dtype)


def save_peft(lora_file: LoraFile, path: str, *, dtype: Any = np.float32) -> None:
  """Writes peft/diffusers names (``unet.<module>.lora_A.weight`` ...) and, per component, a
  ``LoraConfig`` in the header's ``lora_adapter_metadata`` (keys ``unet.r``,
  ``unet.lora_alpha``, ``unet.rank_pattern``, ``unet.alpha_pattern``, ``unet.target_modules``,
  as ``StableDiffusionPipeline.save_lora_weights`` writes them). r and lora_alpha are the most
  common values; modules that differ are in the patterns (module names, matched as suffixes);
  ``target_modules`` is a regex over exactly the file's modules (peft full-matches a string).
  Text-encoder tensors are named ``text_encoder.text_model.encoder.layers...`` as published
  files are; the header's names leave ``text_model.`` out so that peft finds the modules under
  transformers 4 and 5 alike.

  kohya files are resolved only against a model: convert them with `lora_to_jgen_adapters`
  and `jgen.convert.lora_export.to_lora_file` first.
  """
  if lora_file.format != "peft":
    raise LoraFormatError("save_peft needs module names; a kohya file's underscore names are "
                          "resolved against a model first (lora_to_jgen_adapters, then "
                          "jgen.convert.lora_export.to_lora_file)")
  tensors, config = {}, {}
  for component, modules in lora_file.modules.items():
    if not modules:
      continue
    for name, m in modules.items():
      tensors[f"{component}.{name}.lora_A.weight"] = _dtype(m.down, dtype)
      tensors[f"{component}.{name}.lora_B.weight"] = _dtype(m.up, dtype)
    r = collections.Counter(m.rank for m in modules.values()).most_common(1)[0][0]
    alpha = collections.Counter(m.alpha for m in modules.values()).most_common(1)[0][0]
    # Module names as suffixes, so they match with and without transformers 4's "text_model."
    short = {n.removeprefix("text_model."): m for n, m in modules.items()}
    targets = r"(?:.*\.)?(?:" + "|".join(re.escape(n) for n in sorted(short)) + ")"
    settings = {
        "r": r, "lora_alpha": alpha, "target_modules": targets,
        "rank_pattern": {n: m.rank for n, m in short.items() if m.rank != r},
        "alpha_pattern": {n: m.alpha for n, m in short.items() if m.alpha != alpha},
        "init_lora_weights": True, "use_dora": False, "lora_bias": False,
        "use_rslora": False, "peft_type": "LORA", "lora_dropout": 0.0, "bias": "none"}
    config.update({f"{component}.{k}": v for k, v in settings.items()})
  _save(tensors, path, {"format": "pt",
                        METADATA_KEY: json.dumps(config, indent=2, sort_keys=True)})


def save_kohya(lora_file: LoraFile, path: str, *, dtype: Any = np.float32) -> None:
  """Writes kohya names: ``lora_unet_<module, "." -> "_">.lora_down.weight`` / ``lora_up.weight``
  and a scalar ``.alpha`` per module (``lora_te_`` for the text encoder).

  Every module gets the same alpha (the most common one), a module of another alpha_m having
  its up weight scaled by alpha_m / alpha (the same update): loaders match per-module alphas by
  name, and diffusers 0.42 under transformers 5 ignores them for ``lora_te_text_model_*``
  modules (its CLIP modules lost the ``text_model.`` level), while one alpha is always read.
  """
  prefixes = {c: p for p, c in _KOHYA_PREFIX.items()}
  every = [m for modules in lora_file.modules.values() for m in modules.values()]
  alpha = collections.Counter(m.alpha for m in every).most_common(1)[0][0] if every else 1.0
  tensors = {}
  for component, modules in lora_file.modules.items():
    for name, m in modules.items():
      stem = prefixes[component] + name.replace(".", "_")
      tensors[stem + ".lora_down.weight"] = _dtype(m.down, dtype)
      tensors[stem + ".lora_up.weight"] = _dtype(m.up * np.float32(m.alpha / alpha), dtype)
      tensors[stem + ".alpha"] = np.asarray(alpha, np.float32)
  metadata = {"ss_network_module": "networks.lora",
              "ss_network_dim": str(max((m.rank for m in every), default=0)),
              "ss_network_alpha": str(alpha)}
  _save(tensors, path, metadata)
