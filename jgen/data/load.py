"""``load_source``: one spec string names any source (single images, pairs, domains, derived).

Kept apart from the source modules so that combinators (``unpaired:A|B``,
``derived:T:SPEC``) can open their inner sources by spec.
"""

from __future__ import annotations

from jgen import errors
from jgen.data import captions as captions_lib
from jgen.data import derived as derived_lib
from jgen.data import paired as paired_lib
from jgen.data import sources as src_lib
from jgen.data import unpaired_derived as unpaired_derived_lib

__all__ = ["load_source"]

_VALID_SPECS = (
    "'digits', 'fill', 'tfds:NAME' (e.g. tfds:cifar10), 'folder:PATH', 'idx:DIR', 'npz:FILE', "
    "'paired:PATH', 'paired_btoa:PATH', 'unpaired:PATH', 'unpaired:tfds:NAME', "
    "'unpaired:SPEC_A|SPEC_B', 'derived:TRANSFORM:SPEC', 'unpaired_derived:TRANSFORM:SPEC', "
    "'captioned:PATH' "
    "(TRANSFORM one of "
    f"{', '.join(derived_lib.TRANSFORMS)})"
)


def _unknown(spec: str) -> errors.ConfigError:
  return errors.ConfigError(f"unknown data source {spec!r}; valid forms: {_VALID_SPECS}")


def _split_derived(spec: str, rest: str) -> tuple[str, str]:
  """'downsample:4:digits' -> ('downsample:4', 'digits'); 'edges:digits' -> ('edges', ...)."""
  parts = rest.split(":")
  takes_arg = parts[0] in ("downsample", "mask")
  cut = 2 if takes_arg else 1
  if len(parts) <= cut or not all(parts[:cut]):
    raise _unknown(spec)
  return ":".join(parts[:cut]), ":".join(parts[cut:])


def load_source(spec: str, *, split: str = "train", data_dir: str | None = None,
                image_size: int | None = None, channels: int | None = None,
                resize: bool = False, seed: int = 0, cache: bool = False,
                skip_corrupt: bool = False, tokenizer=None):
  """Opens the data named by ``spec`` as a random-access source.

  Every source has ``len``, ``source[i] -> {field: array}``, ``element_spec``,
  ``image_shape`` and ``num_classes``; field names follow ``jgen.data.sources``.

  Args:
    spec: one of

      ``'digits'``: scikit-learn's 1,797 real 8x8 digits (gray levels 0..16 scaled to 0..255),
        labels 0-9; 'train' = the first 1,500, 'test' = the last 297. Fields image, label.
      ``'fill'``: ControlNet's fill50k task regenerated (`jgen.data.fill`): a disc in one of 8
        named colours on white, ``image_size`` (default 32) square, RGB; label = the colour;
        'train' = 50,000, 'test' = 1,000, the same everywhere. Its condition is
        ``derived:outline:fill``.
      ``'tfds:NAME'``: a tfds dataset already prepared as ArrayRecord under ``data_dir``;
        never downloads: fails at once with ``DatasetUnavailableError`` when not prepared.
        Fields image, label (if any), attributes (if any, e.g. celeb_a: float32 [40]).
      ``'folder:PATH'``: a directory or .zip of images. If its top level has ``train/`` or
        ``test/`` folders, ``PATH/<split>/`` is used, else the whole folder. Class subfolders
        give labels (sorted names -> 0..K-1); images directly in the folder have none. Paths
        are sorted, so the order is deterministic. Files are indexed when opened and decoded
        on access (`FolderSource`; ``cache`` decodes all of them into memory up front).
      ``'idx:DIR'``: MNIST-format files ``train-*`` ('train') / ``t10k-*`` ('test'),
        ``<prefix>-images-idx3-ubyte[.gz]`` and optional ``<prefix>-labels-idx1-ubyte[.gz]``.
      ``'npz:FILE'``: arrays ``images`` (or ``x``, or ``x_<split>``) and optional ``labels``
        (or ``y``, ``y_<split>``).
      ``'paired:PATH'``: a pix2pix directory or .zip (``jgen.data.paired``): files holding
        A | B side by side, or ``A/`` and ``B/`` folders of matching names; optional
        ``train/``/``test/``/``val/`` folders. Fields source (A), target (B).
      ``'paired_btoa:PATH'``: the same with source = B, target = A
        (pix2pix's BtoA).
      ``'unpaired:PATH'``: a CycleGAN directory or .zip: ``<split>A/`` and ``<split>B/``
        (trainA/ trainB/ testA/ testB/). Fields image_a, image_b; len = max(nA, nB); the
        pairing is redrawn every epoch.
      ``'unpaired:tfds:NAME'``: two splits of a tfds dataset as the domains, ``<split>A`` and
        ``<split>B`` (e.g. cycle_gan/horse2zebra, split 'train' -> trainA, trainB).
      ``'unpaired:SPEC_A|SPEC_B'``: any two single-image specs as the domains (both read with
        ``split``; their 'image' field is used), e.g. ``unpaired:idx:DIR|folder:PATH``.
      ``'derived:TRANSFORM:SPEC'``: pairs made from the images of ``SPEC``
        (``jgen.data.derived``): source = TRANSFORM(image), target = image, other fields
        kept. TRANSFORM is ``edges``, ``grayscale``, ``outline``, ``downsample:K`` or ``mask:box`` /
        ``mask:center`` (these add a ``mask`` field), e.g. ``derived:downsample:4:digits``.
      ``'unpaired_derived:TRANSFORM:SPEC'``: two domains made from ``SPEC``
        (``jgen.data.unpaired_derived``): A = the images, B = their TRANSFORM. The train
        split (``'train'``, ``'train[...]'``) is unpaired, A from the first half of the
        split and B from the second (fields image_a, image_b, label_a, label_b); every other
        split gives true pairs (image_a, image_b = TRANSFORM(image_a), label, paired), e.g.
        ``unpaired_derived:edges:digits``.
      ``'captioned:PATH'``: a folder of images with captions (``metadata.jsonl``, or a
        ``.txt`` beside each image; `jgen.data.captions`), fields image and tokens (the
        caption's ids by ``tokenizer``): text-to-image fine-tuning. One folder for every split.
    split: 'train' or 'test' (tfds accepts its own split syntax, e.g. 'train[:10%]', except
      in ``unpaired:tfds:``, where the split name gets A/B appended).
    data_dir: tfds data directory (default: $TFDS_DATA_DIR or ~/tensorflow_datasets).
    image_size: expected (or, with ``resize``, target) height and width; for pairs and
      domains it applies to every image field, for derived pairs to the inner images.
    channels: expected (or, with ``resize``, target) number of channels (likewise).
    resize: adapt the images to ``image_size``/``channels`` instead of raising on mismatch.
    cache: folders: decode every image into memory when opened (small datasets: no decoding
      per batch) instead of on access.
    skip_corrupt: folders: replace an image that cannot be decoded by the next one (logged
      and counted) instead of raising `CorruptImageError`.
    seed: the sources' own randomness (the unpaired permutations, ``mask:box``); shuffling
      and flips are seeded by ``make_dataset``.
    tokenizer: ``captioned:`` sources: captions -> int32 token ids ``[N, L]``.

  Returns:
    An ``ArraySource``, ``TfdsSource``, ``PairedSource``, ``UnpairedSource``,
    ``DerivedPairSource`` or ``TruePairSource``.

  Raises:
    ValueError: unknown spec, or the data's shape differs from the requested one.
    DatasetUnavailableError: the data is not on this machine (with how to provide it).
  """
  kind, _, arg = spec.partition(":")
  shape_args = dict(image_size=image_size, channels=channels, resize=resize)
  if kind == "captioned" and arg:
    if tokenizer is None:
      raise ValueError(f"{spec}: a captioned folder needs the text encoder's tokenizer (a "
                       "method with a config.text block, e.g. experiments/sd/finetune.py)")
    return captions_lib.CaptionedFolderSource(src_lib.checked_path(kind, arg), tokenizer,
                                              **shape_args)
  if kind == "derived" and arg:
    transform, inner = _split_derived(spec, arg)
    inner_source = load_source(inner, split=split, data_dir=data_dir, seed=seed,
                               cache=cache, skip_corrupt=skip_corrupt, tokenizer=tokenizer,
                               **shape_args)
    return derived_lib.DerivedPairSource(inner_source, transform, seed=seed)
  if kind == "unpaired_derived" and arg:
    transform, inner = _split_derived(spec, arg)
    inner_source = load_source(inner, split=split, data_dir=data_dir, seed=seed,
                               cache=cache, skip_corrupt=skip_corrupt, **shape_args)
    return unpaired_derived_lib.unpaired_derived(
        inner_source, transform, paired=not unpaired_derived_lib.is_unpaired_split(split),
        seed=seed)
  if kind == "unpaired" and arg.startswith("tfds:") and "|" not in arg:
    name = arg[len("tfds:"):]
    domains = [src_lib.TfdsSource(name, split=f"{split}{d}", data_dir=data_dir, **shape_args)
               for d in "AB"]
    return paired_lib.UnpairedSource(*domains, seed=seed)
  if kind == "unpaired" and "|" in arg:
    specs = arg.split("|")
    if len(specs) != 2 or not all(specs):
      raise _unknown(spec)
    domains = [load_source(s, split=split, data_dir=data_dir, seed=seed, cache=cache,
                           skip_corrupt=skip_corrupt, **shape_args) for s in specs]
    return paired_lib.UnpairedSource(*domains, seed=seed)
  if kind in ("paired", "paired_btoa") and arg:
    return paired_lib.load_paired_folder(
        src_lib.checked_path(kind, arg), split=split,
        direction="BtoA" if kind == "paired_btoa" else "AtoB", **shape_args)
  if kind == "unpaired" and arg:
    return paired_lib.load_unpaired_folder(src_lib.checked_path(kind, arg), split=split,
                                           seed=seed, **shape_args)
  return src_lib.load_image_source(spec, split=split, data_dir=data_dir,
                                   valid_specs=_VALID_SPECS, cache=cache,
                                   skip_corrupt=skip_corrupt, **shape_args)
