"""The shared base of every experiment config (ml_collections, translated at the boundary)."""

from __future__ import annotations

import difflib
import importlib.util
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

import ml_collections

from jgen import errors
from jgen.errors import ConfigError


def experiment_module(name: str, beside: str) -> ModuleType:
  """Loads the config file `<name>.py` relative to the folder of `beside` (a config's `__file__`).

  Experiment files are loaded by path (as `--config` does), not imported as a package, so a config
  that builds on another one loads it with this: `experiment_module("base", beside=__file__)` for
  its family's base, `experiment_module("../ddpm/digits", beside=__file__)` across families.
  """
  path = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(beside)), f"{name}.py"))
  spec = importlib.util.spec_from_file_location(
      "experiments." + os.path.splitext(name)[0].replace("../", "").replace("/", "."), path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """The variant argument of a config, `get_config(arg)`, as typed fields (big_vision's convention).

  `arg` is what follows the first ':' of `--config experiments/<family>/<name>.py:ARG`:
  comma-separated `key=value` pairs and bare flags (`smoke` is `smoke=True`), e.g.
  `method=wgan_gp,smoke`. Each keyword names a key and its default, whose type types the value:
  bool (`true/false/1/0/yes/no`, or the bare flag), int, float, str; a tuple of strings is a
  choice, its first entry the default.
  A config declares its variants by these defaults (module-level `ARGS`, see `variants`).

  Raises:
    ConfigError: an unknown key, a repeated key, or a value of the wrong type or not among the
      choices; the message names the valid keys or values.
  """
  values = {k: (v[0] if isinstance(v, tuple) else v) for k, v in defaults.items()}
  seen = set()
  for item in (arg or "").split(","):
    item = item.strip()
    if not item:
      continue
    key, has_value, text = item.partition("=")
    key, text = key.strip(), text.strip()
    if key not in defaults:
      close = difflib.get_close_matches(key, list(defaults), n=1)
      hint = f" (did you mean {close[0]}?)" if close else ""
      valid = ", ".join(_describe(k, v) for k, v in defaults.items()) or "none"
      raise ConfigError(f"unknown config argument {key!r}{hint} in {arg!r}; valid: {valid}")
    if key in seen:
      raise ConfigError(f"config argument {key!r} given twice in {arg!r}")
    seen.add(key)
    values[key] = _typed(key, defaults[key], text if has_value else None, arg)
  return ml_collections.ConfigDict(values)


def _describe(key: str, default: Any) -> str:
  if isinstance(default, tuple):
    return f"{key}={'|'.join(default)}"
  if isinstance(default, bool):
    return key
  return f"{key}=<{type(default).__name__}>"


def _typed(key: str, default: Any, text: str | None, arg: str) -> Any:
  """`text` (None for a bare flag) as the type of `default`."""
  if isinstance(default, bool):
    if text is None or text.lower() in _TRUE:
      return True
    if text.lower() in _FALSE:
      return False
    raise ConfigError(f"config argument {key} is a flag: {key}, {key}=true or {key}=false "
                      f"(got {text!r} in {arg!r})")
  if text is None:
    raise ConfigError(f"config argument {key} needs a value: {_describe(key, default)} "
                      f"(got the bare flag in {arg!r})")
  if isinstance(default, tuple):
    if text not in default:
      raise ConfigError(f"config argument {key} is one of {', '.join(default)} "
                        f"(got {text!r} in {arg!r})")
    return text
  try:
    return type(default)(text)
  except ValueError:
    raise ConfigError(f"config argument {key} is a {type(default).__name__} "
                      f"(got {text!r} in {arg!r})") from None


def variants(args: dict[str, Any]) -> tuple[str | None, ...]:
  """The variants a config declares by its `ARGS` (the defaults of `parse_arg`), for the tests.

  The default (None), each flag alone, each value of each choice; with a `smoke` flag also each
  of those with `smoke` added, so the seconds-long variant of every variant builds too.
  """
  out = [None]
  for key, default in args.items():
    if isinstance(default, bool):
      out.append(key)
    elif isinstance(default, tuple):
      out.extend(f"{key}={v}" for v in default[1:])
  if isinstance(args.get("smoke"), bool):
    out.extend(("smoke" if a is None else f"{a},smoke") for a in out[1:] + [None] if a != "smoke")
  return tuple(dict.fromkeys(out))


def alias(target: str, beside: str, legacy: Callable[[str], str] | None = None
          ) -> Callable[[str | None], ml_collections.ConfigDict]:
  """The `get_config` of an old flat config path kept as an alias of `target` (until 0.2).

  `experiments/ddpm/digits.py` is `get_config = alias("ddpm/digits", __file__)`; `legacy` turns
  an old argument that the new convention refuses into the new one (`"wgan_gp"` ->
  `"method=wgan_gp"`); an argument in the new convention passes unchanged.
  """
  module = experiment_module(target, beside)

  def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    try:
      return module.get_config(arg)
    except ConfigError:
      if legacy is None or not arg:
        raise
      try:
        return module.get_config(legacy(arg))
      except ConfigError:
        pass
      raise

  get_config.__doc__ = f"`get_config` of experiments/{target}.py (old arguments translated)."
  return get_config


def base_config() -> ml_collections.ConfigDict:
  """Fields every experiment has; `experiments/*.py` start from this and override."""
  c = ml_collections.ConfigDict()
  c.method = "diffusion.ddpm"
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.source = "digits"       # digits | tfds:NAME | folder:PATH | idx:DIR | npz:FILE
  c.data.split = "train"
  c.data.eval_split = "test"
  c.data.data_dir = ml_collections.FieldReference(None, field_type=str)  # tfds data_dir
  c.data.image_size = 32
  c.data.channels = 3
  c.data.resize = False          # resize source images to image_size (else: shape must match)
  c.data.batch_size = 128        # global batch, split over all devices of all processes
  c.data.random_flip = False
  c.data.prefetch = 2
  c.data.cache = False           # folder/zip sources: decode all images up front (else on access)
  c.data.skip_corrupt = False    # folder/zip sources: skip undecodable files (else an error)
  c.data.train_examples = 0      # > 0: train on the first N examples of data.split only
  c.data.train_labels = ""       # "7" or "1,7": train on the examples of these labels only
  c.data.canvas = 0              # >= 2: that many examples side by side (jgen.data.canvas)

  c.model = ml_collections.ConfigDict()
  c.model.dtype = "float32"      # compute dtype; bfloat16 on GPU/TPU. Params stay float32.

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "adam"
  c.optim.lr = 2e-4
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.eps = 1e-8
  c.optim.weight_decay = 0.0
  c.optim.warmup_steps = 0
  c.optim.schedule = "constant"   # constant | cosine | linear | exponential (jgen.train.optim)
  c.optim.decay_from = 0.5        # linear: the fraction of the steps after which it decays
  c.optim.decay_rate = 0.999995   # exponential: lr * decay_rate ** step
  c.optim.decay = 0.9             # rmsprop's second-moment decay
  c.optim.momentum = 0.0          # sgd (0: none)
  c.optim.grad_clip_norm = 1.0
  # Trainable-parameter rules (jgen.train.rules): ((regex over '/'-joined parameter paths,
  # learning-rate multiplier or 'frozen'), ...); the first match wins, unmatched leaves train
  # at 1.0, a rule matching nothing is an error. E.g. --config.optim.rules="(('lora/.*', 1.0),
  # ('.*', 'frozen'))" trains the adapters only.
  c.optim.rules = ()

  # LoRA (jgen.nn.lora, jgen.train.adapters): low-rank adapters of the Dense / convolution
  # kernels whose module path `targets` searches, for any method; rank 0 = off. With no
  # optim.rules only the adapters train; pretrained weights come in through init_from, and each
  # checkpoint also writes an adapter-only one (workdir/adapters). alpha None: alpha = rank.
  c.lora = ml_collections.ConfigDict()
  c.lora.rank = 0
  c.lora.targets = ""
  c.lora.alpha = ml_collections.FieldReference(None, field_type=float)
  c.lora.init = "kaiming"         # kaiming | gaussian: how A starts (B starts at zero)

  # Start from another run's checkpoint (jgen.train.init_from): frozen arrays
  # (into='frozen/<name>') or pretrained parameters (into='params' or 'params/<path>', the
  # leaves selected by `match`). Off while workdir is None. Named extra loads go in sub-dicts
  # (c.init_from.teacher = ConfigDict(...)) with the same fields.
  c.init_from = ml_collections.ConfigDict()
  c.init_from.workdir = ml_collections.FieldReference(None, field_type=str)
  c.init_from.step = ml_collections.FieldReference(None, field_type=int)  # None: latest
  c.init_from.source = "ema"      # an EMA name | params | model_state | frozen
  c.init_from.subtree = ""        # '/'-path inside the source ("" = all)
  c.init_from.into = "params"     # params | params/<path> | frozen/<name>
  c.init_from.match = ".*"        # regex over the loaded paths: which leaves to load

  # The device mesh (jgen.train.mesh): every batch is split over all devices; the train state
  # is also split over `fsdp` of them (1: replicated on every device; k: each large leaf in k
  # shards, a k-th of the state's memory per device). A resume may change it.
  c.mesh = ml_collections.ConfigDict()
  c.mesh.fsdp = 1
  # How the step runs over the devices (jgen.train.parallel): "jit" over the mesh, or "pmap"
  # (the same step per local device, gradients averaged by pmean; no FSDP). A resume may
  # change it.
  c.parallel = "jit"

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 1000
  c.train.ema_decay = 0.9999
  c.train.ema_warmup = False
  c.train.log_every = 50
  c.train.checkpoint_every = 1000
  c.train.keep_checkpoints = 3
  c.train.sample_every = 0        # 0: only at the end
  c.train.eval_every = 0          # 0: never during training
  c.train.eval_batches = 4
  c.train.async_checkpoints = True
  c.train.allow_config_change = False  # resume despite a changed model/method/optimizer field

  c.sample = ml_collections.ConfigDict()
  c.sample.num = 64               # images written by --mode=sample and at sample_every
  c.sample.batch_size = 64        # images per jitted sampler call
  c.sample.seed = 1
  c.sample.labels = ""            # conditional methods: "" = every class in turn, or "3", "0,2,4"
  c.sample.source = ""            # translation methods: a folder of your own images to translate
  #                                 ("" = the first sample.num images of data.eval_split)

  # Sample metrics of --mode=eval (jgen.metrics.evaluate.evaluate_config), beside the method's
  # own evaluate(): EMA samples against the statistics of config.data, cached per dataset+split.
  c.eval = ml_collections.ConfigDict()
  c.eval.metrics = ""             # "" off; else a subset of "fid,kid,is,pr,dc,ppl", e.g. "fid,pr";
  #                                 autoencoders: "rfid" (every held-out image reconstructed once),
  #                                 "lpips" (their mean LPIPS to the originals)
  c.eval.features = "auto"        # auto (domain:<dataset> where jgen has one, else inception) |
  #                                 inception | domain:digits | domain:mnist | domain:fashion_mnist
  c.eval.num_samples = 10000      # generated images (drawn in chunks of sample.batch_size)
  c.eval.batch_size = 200         # images per feature-network call
  c.eval.dtype = "float32"        # Inception compute dtype (bfloat16 on GPU/TPU is faster)
  c.eval.reference_split = ""     # "" = data.split (FID against the training split, as papers)
  c.eval.reference_max_images = ml_collections.FieldReference(None, field_type=int)  # None: all;
  #                                 N: a random N of the split, seeded by eval.seed
  c.eval.num_reference_features = ml_collections.FieldReference(None, field_type=int)  # KID/P&R
  c.eval.inception_weights = ml_collections.FieldReference(None, field_type=str)  # None: search
  c.eval.domain_source = ml_collections.FieldReference(None, field_type=str)  # domain:mnist data
  c.eval.is_splits = 10
  c.eval.pr_k = 3
  c.eval.checkpoint_step = ml_collections.FieldReference(None, field_type=int)  # --mode=eval /
  #                                 sample: that kept checkpoint (None: the latest)
  c.eval.kid_subsets = 100
  c.eval.kid_subset_size = 1000
  c.eval.seed = 0                 # sampling key and real-subset / KID-subset seed
  c.eval.ppl_samples = 10000      # "ppl": latent pairs (StyleGAN: 100,000)
  c.eval.ppl_epsilon = 1e-4       # "ppl": the step along the path
  c.eval.ppl_sampling = "end"     # "ppl": "end" (t = 0, StyleGAN's W-space figure) | "full"
  c.eval.ppl_distance = "auto"    # "ppl": lpips (LPIPS-VGG, the paper's) | features (the eval
  #                                 network's squared feature distance, a stand-in) | auto
  #                                 (features for a domain:<dataset> network, else lpips)
  c.eval.ppl_crop = False         # "ppl": StyleGAN's face crop of aligned FFHQ-like faces
  c.eval.lpips_net = "alex"       # "lpips" (reconstruction LPIPS): alex (the paper's metric) | vgg
  return c


# Blocks whose every field is read by the spine itself: a field the base config does not define
# is a typo or a stale option (methods add their sampler settings to `sample`, and named loads
# to `init_from`, so those two blocks are open).
CLOSED_BLOCKS = ("data", "train", "optim", "mesh", "eval")


def check_config_keys(config: Any) -> None:
  """Raises ConfigError for fields of the spine's closed blocks that `base_config` lacks.

  A config file that sets ``c.train.chekpoint_every = 100`` would otherwise run with the
  default and ignore the setting silently.
  """
  base = base_config()
  problems = []
  for block in CLOSED_BLOCKS:
    if block not in config or not hasattr(config[block], "keys"):
      continue
    known = list(base[block].keys())
    for key in sorted(set(config[block].keys()) - set(known)):
      close = difflib.get_close_matches(key, known, n=1)
      hint = f" (did you mean {block}.{close[0]}?)" if close else ""
      problems.append(f"{block}.{key}{hint}")
  if problems:
    raise errors.ConfigError(
        f"the config sets fields jgen does not define: {', '.join(problems)}. Fix the name, or "
        f"remove it; the fields of {', '.join(CLOSED_BLOCKS)} are those of "
        "jgen.train.config.base_config()")


def digits_data(c: ml_collections.ConfigDict, *, smoke: bool = False, batch_size: int = 64
                ) -> ml_collections.ConfigDict:
  """Sets `c.data` to the CPU recipes' data: scikit-learn's bundled digits resized to 16x16x1,
  batch `batch_size` (`smoke`: 8x8, batch 8, what the tests' seconds-long runs use)."""
  c.data.source = "digits"
  c.data.image_size = 8 if smoke else 16
  c.data.channels = 1
  c.data.resize = True
  c.data.batch_size = 8 if smoke else batch_size
  return c


def smoke_schedule(c: ml_collections.ConfigDict, *, num_steps: int = 4,
                   checkpoint_every: int | None = None) -> ml_collections.ConfigDict:
  """Sets a seconds-long run (the `:smoke` variants): constant learning rate without warmup,
  `num_steps` steps logged every 2, a checkpoint and a one-batch eval every `checkpoint_every`
  (default: at the end), no periodic samples, 8 samples in one call."""
  every = num_steps if checkpoint_every is None else checkpoint_every
  c.optim.warmup_steps = 0
  c.optim.schedule = "constant"
  c.train.num_steps = num_steps
  c.train.log_every = 2
  c.train.checkpoint_every = every
  c.train.eval_every = every
  c.train.eval_batches = 1
  c.train.sample_every = 0
  c.sample.num = 8
  c.sample.batch_size = 8
  return c
