"""Derived pairs: a translation task made from any image source by a named transform.

``DerivedPairSource(inner, 'edges')[i] = {'source': edges(image), 'target': image, ...}``, the
other fields of ``inner[i]`` (``label``, ``attributes``) kept. Transforms, each a deterministic
function of (image, seed, index), all keeping the image's shape [H, W, C] so that ``source``
and ``target`` have the same shape (one-channel results are repeated to C channels):

  ``edges``: Sobel gradient magnitude of the luma (ITU-R 601 weights on RGB; the image itself
    when gray), ``sqrt(gx^2 + gy^2) / 4`` rounded and clipped to 0..255, borders mirrored
    (``scipy.ndimage.sobel``'s 'reflect'): a step edge of height h gives h; white edges on
    black.
  ``grayscale``: the luma, rounded (as ``load_source``'s 3 -> 1 channel conversion).
  ``inverted``: the negative, 255 - image (a global, pixelwise change: on the digits, dark
    strokes on white; `jgen.gan.domains.inverted` on uint8).
  ``outline``: the one-pixel inner boundary of the foreground as white (255) on black, for
    images of a plain background (``jgen.data.fill``'s discs, digits): a pixel is foreground
    when some channel differs from the top-left pixel's by more than 48 levels, and on the
    outline when it is foreground and one of its 4 neighbours is not (borders replicated).
  ``downsample:K``: super-resolution input: the mean of each K x K block (area averaging,
    rounded), upsampled back by nearest neighbour (each low-resolution pixel repeated K x K);
    H and W must be multiples of K.
  ``mask:box``: inpainting: a rectangle of height and width uniform in [H/4, H/2] and
    [W/4, W/2] at a uniform position, drawn from ``np.random.default_rng((seed, index))``;
    ``mask:center``: the centre H/2 x W/2 rectangle. Masked pixels of ``source`` are 0, and a
    ``mask`` field float32 [H, W, 1] is 1 on them and 0 elsewhere. ``mask:box`` is redrawn
    every epoch (``varies_by_pass``: the pipeline reads epoch e at index ``e * len + i``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jgen import errors

__all__ = ["TRANSFORMS", "DerivedPairSource", "box_mask", "center_mask", "downsample_image",
           "grayscale_image", "outline_image", "parse_transform", "sobel_edges"]

TRANSFORMS = ("edges", "grayscale", "inverted", "outline", "downsample:K", "mask:box",
              "mask:center")
OUTLINE_TOLERANCE = 48  # uint8 levels: above JPEG noise, below any fill colour's contrast
_LUMA = np.array([0.299, 0.587, 0.114])


def _luma(image: np.ndarray) -> np.ndarray:
  """float64 [H, W] luma of a uint8 [H, W, C] image (channel 0 when C is 1 or 2)."""
  if image.shape[-1] >= 3:
    return image[..., :3].astype(np.float64) @ _LUMA
  return image[..., 0].astype(np.float64)


def _to_channels(gray: np.ndarray, channels: int) -> np.ndarray:
  """float [H, W] -> uint8 [H, W, channels], rounded and clipped to 0..255."""
  plane = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
  return np.repeat(plane[..., None], channels, axis=-1)


def sobel_edges(image: np.ndarray) -> np.ndarray:
  """Sobel magnitude / 4 of the luma of uint8 [H, W, C], as uint8 [H, W, C] (see module)."""
  padded = np.pad(_luma(image), 1, mode="symmetric")
  dy = padded[2:] - padded[:-2]                        # d/d(row), [H, W + 2]
  gy = dy[:, :-2] + 2 * dy[:, 1:-1] + dy[:, 2:]        # smoothed along columns
  dx = padded[:, 2:] - padded[:, :-2]                  # d/d(column), [H + 2, W]
  gx = dx[:-2] + 2 * dx[1:-1] + dx[2:]
  return _to_channels(np.hypot(gx, gy) / 4, image.shape[-1])


def outline_image(image: np.ndarray) -> np.ndarray:
  """uint8 [H, W, C]: 255 on the foreground's inner boundary, 0 elsewhere (see module)."""
  diff = np.abs(image.astype(np.int16) - image[:1, :1].astype(np.int16)).max(axis=-1)
  fg = np.pad(diff > OUTLINE_TOLERANCE, 1, mode="edge")
  core = fg[1:-1, 1:-1]
  interior = core & fg[:-2, 1:-1] & fg[2:, 1:-1] & fg[1:-1, :-2] & fg[1:-1, 2:]
  return _to_channels(np.where(core & ~interior, 255.0, 0.0), image.shape[-1])


def grayscale_image(image: np.ndarray) -> np.ndarray:
  """The rounded ITU-R 601 luma of uint8 [H, W, C], repeated to C channels."""
  return _to_channels(_luma(image), image.shape[-1])


def downsample_image(image: np.ndarray, factor: int) -> np.ndarray:
  """K x K area average (rounded), then nearest-neighbour upsampling to the same shape."""
  h, w, c = image.shape
  if h % factor or w % factor:
    raise ValueError(f"downsample:{factor} needs a height and width divisible by {factor}, "
                     f"got images of {h}x{w}; choose another factor or set "
                     "--config.data.image_size (with --config.data.resize=True)")
  blocks = image.reshape(h // factor, factor, w // factor, factor, c).astype(np.float64)
  low = np.clip(np.rint(blocks.mean(axis=(1, 3))), 0, 255).astype(np.uint8)
  return np.repeat(np.repeat(low, factor, axis=0), factor, axis=1)


def box_mask(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
  """float32 [H, W, 1]: 1 on a random rectangle of size in [H/4, H/2] x [W/4, W/2]."""
  h = int(rng.integers(max(1, height // 4), max(1, height // 2) + 1))
  w = int(rng.integers(max(1, width // 4), max(1, width // 2) + 1))
  top = int(rng.integers(0, height - h + 1))
  left = int(rng.integers(0, width - w + 1))
  mask = np.zeros((height, width, 1), np.float32)
  mask[top:top + h, left:left + w] = 1.0
  return mask


def center_mask(height: int, width: int) -> np.ndarray:
  """float32 [H, W, 1]: 1 on the centre rectangle of size H/2 x W/2 (at least 1 x 1)."""
  h, w = max(1, height // 2), max(1, width // 2)
  top, left = (height - h) // 2, (width - w) // 2
  mask = np.zeros((height, width, 1), np.float32)
  mask[top:top + h, left:left + w] = 1.0
  return mask


def parse_transform(name: str) -> tuple[str, int | str | None]:
  """'edges' -> ('edges', None); 'downsample:4' -> ('downsample', 4); 'mask:box' -> ..."""
  kind, _, arg = name.partition(":")
  if kind in ("edges", "grayscale", "inverted", "outline") and not arg:
    return kind, None
  if kind == "downsample" and arg.isdigit() and int(arg) >= 2:
    return kind, int(arg)
  if kind == "mask" and arg in ("box", "center"):
    return kind, arg
  raise errors.ConfigError(f"unknown derived transform {name!r}; valid: "
                           f"{', '.join(TRANSFORMS)} (K an integer >= 2)")


class DerivedPairSource:
  """``{'source': transform(image), 'target': image}`` over an image source (see module).

  Attributes ``image_shape``, ``num_classes`` and ``class_names`` are the inner source's.
  """

  def __init__(self, inner, transform: str, *, seed: int = 0):
    """``inner`` has an ``image`` field; ``transform`` is one of ``TRANSFORMS``."""
    self.kind, self.arg = parse_transform(transform)
    spec = dict(inner.element_spec)
    if "image" not in spec:
      raise ValueError(f"derived:{transform} needs a source with an 'image' field; this one "
                       f"has {sorted(spec)}")
    shape, _ = spec.pop("image")
    if self.kind == "downsample" and (shape[0] % self.arg or shape[1] % self.arg):
      downsample_image(np.zeros(shape, np.uint8), self.arg)  # raises the explanatory error
    self.inner, self.seed, self.transform = inner, seed, transform
    self.varies_by_pass = (self.kind, self.arg) == ("mask", "box")
    self.image_shape = tuple(shape)
    self.num_classes = getattr(inner, "num_classes", None)
    self.class_names = getattr(inner, "class_names", None)
    image_spec = (tuple(shape), np.dtype(np.uint8))
    self.element_spec = {"source": image_spec, "target": image_spec, **spec}
    if self.kind == "mask":
      self.element_spec["mask"] = ((*shape[:2], 1), np.dtype(np.float32))

  def __len__(self) -> int:
    return len(self.inner)

  def _derive(self, example: dict[str, np.ndarray], index: int) -> dict[str, np.ndarray]:
    image = np.asarray(example["image"])
    out = {k: v for k, v in example.items() if k != "image"}
    if self.kind == "mask":
      h, w = image.shape[:2]
      if self.arg == "box":
        mask = box_mask(h, w, np.random.default_rng((self.seed, index)))
      else:
        mask = center_mask(h, w)
      out["mask"] = mask
      source = np.where(mask > 0, np.uint8(0), image)
    elif self.kind == "downsample":
      source = downsample_image(image, self.arg)
    elif self.kind == "edges":
      source = sobel_edges(image)
    elif self.kind == "outline":
      source = outline_image(image)
    elif self.kind == "inverted":
      source = np.uint8(255) - image.astype(np.uint8)
    else:
      source = grayscale_image(image)
    return {"source": source, "target": image, **out}

  def _inner_index(self, index: int) -> int:
    index = int(index)
    if index < 0 or (index >= len(self) and not self.varies_by_pass):
      raise IndexError(f"index {index} out of range for {len(self)} examples")
    return index % len(self)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return self._derive(self.inner[self._inner_index(index)], int(index))

  def _getitems(self, indices: Sequence[int]) -> list[dict[str, np.ndarray]]:
    keys = [self._inner_index(i) for i in indices]
    if hasattr(self.inner, "_getitems"):
      examples = self.inner._getitems(keys)  # pylint: disable=protected-access
    else:
      examples = [self.inner[k] for k in keys]
    return [self._derive(ex, int(i)) for ex, i in zip(examples, indices)]

  def __repr__(self) -> str:
    return f"DerivedPairSource({self.transform}, {self.inner!r})"
