"""Captioned image folders: the data of text-to-image fine-tuning (`captioned:PATH`).

A folder of images (any depth, sorted paths) whose captions come from, in this order:

* ``metadata.jsonl`` at the folder's root, as diffusers' ``imagefolder`` reads it: one JSON
  object per line with ``file_name`` (relative to the root) and the caption in ``text``
  (or ``caption``, ``prompt``); images it does not name are not used;
* otherwise a ``.txt`` file beside each image with the same stem (``0001.png`` +
  ``0001.txt``, the DreamBooth / kohya layout); an image without one is an error.

Each record is ``{"image": uint8 [H, W, C], "tokens": int32 [L]}``: the caption tokenized once
when the folder is opened by the tokenizer the text encoder reads (`jgen.nn.clip_tokenizer`),
so batches carry token ids and no strings. Images are decoded on access (and checked or resized
as every folder source's are).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from jgen import errors
from jgen.data import sources as src_lib

__all__ = ["CaptionedFolderSource", "TEXT_KEYS", "read_captions", "write_dreambooth_folder"]

TEXT_KEYS = ("text", "caption", "prompt")


def _images_under(root: str) -> list[str]:
  out = []
  for folder, _, names in os.walk(root):
    for name in names:
      if src_lib._is_image(name):  # pylint: disable=protected-access
        out.append(os.path.relpath(os.path.join(folder, name), root))
  return sorted(out)


def read_captions(root: str) -> tuple[list[str], list[str]]:
  """(image paths relative to `root`, their captions) of a captioned folder (module docstring).

  Raises:
    src_lib.DatasetUnavailableError: no such folder, or no image in it.
    ValueError: a metadata line without a file name or caption, a file it names that is not
      there, or an image without a caption file.
  """
  if not os.path.isdir(root):
    raise src_lib.DatasetUnavailableError(f"captioned:{root}: no such folder")
  metadata = os.path.join(root, "metadata.jsonl")
  if os.path.isfile(metadata):
    files, captions = [], []
    with open(metadata, encoding="utf-8") as f:
      for number, line in enumerate(f, 1):
        if not line.strip():
          continue
        row = json.loads(line)
        text = next((row[k] for k in TEXT_KEYS if k in row), None)
        if "file_name" not in row or text is None:
          raise ValueError(f"{metadata}:{number}: each line needs 'file_name' and a caption in "
                           f"one of {TEXT_KEYS}, got keys {sorted(row)}")
        if not os.path.isfile(os.path.join(root, row["file_name"])):
          raise ValueError(f"{metadata}:{number}: {row['file_name']} is not in {root}")
        files.append(row["file_name"])
        captions.append(str(text))
    return files, captions
  files = _images_under(root)
  if not files:
    raise src_lib.DatasetUnavailableError(f"captioned:{root}: no image files")
  captions, lacking = [], []
  for name in files:
    txt = os.path.join(root, os.path.splitext(name)[0] + ".txt")
    if os.path.isfile(txt):
      with open(txt, encoding="utf-8") as f:
        captions.append(f.read().strip())
    else:
      lacking.append(name)
  if lacking:
    raise ValueError(f"captioned:{root}: {len(lacking)} images have no caption file (e.g. "
                     f"{lacking[:3]}); put a .txt of the same name beside each image, or a "
                     "metadata.jsonl with file_name and text per line")
  return files, captions


class CaptionedFolderSource:
  """Images of a captioned folder with their caption tokens (see the module docstring).

  Args:
    root: the folder.
    tokenize: ``list of captions -> int32 [N, L]`` (a `CLIPTokenizer`).
    image_size, channels, resize: the shape policy of every folder source.
  """

  def __init__(self, root: str, tokenize: Callable[[Sequence[str]], np.ndarray], *,
               image_size: int | None, channels: int | None, resize: bool):
    files, self.captions = read_captions(root)
    self.tokens = np.asarray(tokenize(self.captions), np.int32)
    self._images = src_lib.FolderSource(
        root, [os.path.join(root, f) for f in files], _read_file, None, None,
        what=f"captioned:{root}", image_size=image_size, channels=channels, resize=resize)
    self.image_shape = self._images.image_shape
    self.num_classes = None
    self.element_spec = {**self._images.element_spec,
                         "tokens": ((self.tokens.shape[1],), np.dtype(np.int32))}

  def __len__(self) -> int:
    return len(self.captions)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {"image": self._images[int(index)]["image"], "tokens": self.tokens[int(index)]}


def _read_file(path: str) -> bytes:
  with open(path, "rb") as f:
    return f.read()


def write_dreambooth_folder(out: str, instance_images: Sequence[np.ndarray],
                            instance_prompt: str, class_images: Sequence[np.ndarray],
                            class_prompt: str) -> str:
  """A captioned folder for DreamBooth with prior preservation (Ruiz et al. 2023).

  Writes ``out/instance_K.png`` and ``out/class_K.png`` and a ``metadata.jsonl`` that lists every
  class image once and the instance images repeated (in turn) to as many rows, so that uniform
  sampling from the folder draws subject and prior examples equally often: the expected loss is
  (L_instance + L_prior) / 2, DreamBooth's L_instance + lambda L_prior with lambda = 1 at half
  the scale.

  Args:
    out: the folder to write (created; must not hold a metadata.jsonl yet).
    instance_images: the subject's images, uint8 [H, W, C].
    instance_prompt: their caption, e.g. "a photo of sks dog".
    class_images: images of the class drawn by the base model (``--mode=sample``'s ``.npz``).
    class_prompt: their caption, e.g. "a photo of a dog".

  Returns:
    the metadata file's path.

  Raises:
    ValueError: no instance or class images, or `out` already holds a metadata.jsonl.
  """
  if not len(instance_images) or not len(class_images):
    raise ValueError("DreamBooth needs at least one instance image and one class image")
  os.makedirs(out, exist_ok=True)
  metadata = os.path.join(out, "metadata.jsonl")
  if os.path.exists(metadata):
    raise errors.ConfigError(f"{metadata} exists; write the DreamBooth folder into a new "
                             "directory")
  rows = []
  for kind, images, prompt in (("instance", instance_images, instance_prompt),
                               ("class", class_images, class_prompt)):
    for k, image in enumerate(images):
      image = np.asarray(image, np.uint8)
      Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
          os.path.join(out, f"{kind}_{k}.png"))
    rows.append([{"file_name": f"{kind}_{k}.png", "text": prompt} for k in range(len(images))])
  instance_rows, class_rows = rows
  repeated = [instance_rows[i % len(instance_rows)] for i in range(len(class_rows))]
  with open(metadata, "w", encoding="utf-8") as f:
    for row in repeated + class_rows:
      f.write(json.dumps(row) + "\n")
  return metadata


def main(argv: Sequence[str] | None = None) -> int:
  """``python -m jgen.data.captions INSTANCE_DIR CLASS_NPZ OUT --instance_prompt=P
  --class_prompt=Q``: a DreamBooth folder (`write_dreambooth_folder`) from the subject's
  images and the class images that ``--mode=sample`` of the converted model wrote
  (``samples/*.npz``)."""
  parser = argparse.ArgumentParser(prog="python -m jgen.data.captions", description=main.__doc__)
  parser.add_argument("instance_dir")
  parser.add_argument("class_npz")
  parser.add_argument("out")
  parser.add_argument("--instance_prompt", required=True)
  parser.add_argument("--class_prompt", required=True)
  parser.add_argument("--verbose", action="store_true", help=errors.VERBOSE_HELP)
  args = parser.parse_args(argv)
  for path, what in ((args.instance_dir, "the subject's image folder"),
                     (args.class_npz, "the class images' .npz (samples/*.npz of --mode=sample)")):
    if not os.path.exists(path):
      raise errors.DataError(f"{path} does not exist: pass {what}")
  decode = src_lib._decode  # pylint: disable=protected-access
  instance = [decode(_read_file(os.path.join(args.instance_dir, f)))
              for f in _images_under(args.instance_dir)]
  with np.load(args.class_npz) as z:
    classes = list(z["images"])
  print(write_dreambooth_folder(args.out, instance, args.instance_prompt, classes,
                                args.class_prompt))
  return 0


if __name__ == "__main__":
  with errors.reported("python -m jgen.data.captions"):
    raise SystemExit(main())
