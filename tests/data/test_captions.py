"""Captioned image folders (`captioned:PATH`): .txt captions, metadata.jsonl, errors."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from jgen.data import load_source
from jgen.data.captions import read_captions


def _tokenize(captions):
  """A stand-in tokenizer: caption length and first letter code, padded to 4."""
  return np.array([[len(c), ord(c[0]) if c else 0, 0, 0] for c in captions], np.int32)


def _images(root, names, size=8):
  os.makedirs(root, exist_ok=True)
  for i, name in enumerate(names):
    os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
    Image.fromarray(np.full((size, size, 3), 40 * i, np.uint8)).save(os.path.join(root, name))


def test_txt_captions_beside_images(tmp_path):
  root = str(tmp_path / "a")
  _images(root, ["b.png", "sub/a.png"])
  for name, text in (("b", "a dog"), ("sub/a", "  a cat\n")):
    with open(os.path.join(root, name + ".txt"), "w") as f:
      f.write(text)
  assert read_captions(root) == (["b.png", "sub/a.png"], ["a dog", "a cat"])
  source = load_source(f"captioned:{root}", image_size=8, channels=3, tokenizer=_tokenize)
  assert len(source) == 2 and source.element_spec["tokens"][0] == (4,)
  record = source[1]
  assert record["image"].shape == (8, 8, 3) and record["image"][0, 0, 0] == 40
  np.testing.assert_array_equal(record["tokens"], [5, ord("a"), 0, 0])


def test_metadata_jsonl_wins_and_selects(tmp_path):
  root = str(tmp_path / "m")
  _images(root, ["x.png", "y.png"])
  with open(os.path.join(root, "metadata.jsonl"), "w") as f:
    f.write(json.dumps({"file_name": "y.png", "text": "only y"}) + "\n")
  assert read_captions(root) == (["y.png"], ["only y"])
  with open(os.path.join(root, "metadata.jsonl"), "a") as f:
    f.write(json.dumps({"file_name": "z.png", "caption": "missing"}) + "\n")
  with pytest.raises(ValueError, match="z.png"):
    read_captions(root)


def test_missing_captions_and_tokenizer_are_errors(tmp_path):
  root = str(tmp_path / "n")
  _images(root, ["x.png"])
  with pytest.raises(ValueError, match="no caption file"):
    read_captions(root)
  with pytest.raises(ValueError, match="tokenizer"):
    load_source(f"captioned:{root}", image_size=8, channels=3)


def test_dreambooth_folder_balances_subject_and_prior(tmp_path):
  from jgen.data.captions import main  # pylint: disable=import-outside-toplevel
  _images(str(tmp_path / "subject"), ["a.png", "b.png"])
  classes = np.random.RandomState(0).randint(0, 256, (5, 8, 8, 3)).astype(np.uint8)
  np.savez(tmp_path / "class.npz", images=classes)
  out = str(tmp_path / "db")
  assert main([str(tmp_path / "subject"), str(tmp_path / "class.npz"), out,
               "--instance_prompt=a photo of sks dog", "--class_prompt=a photo of a dog"]) == 0
  files, captions = read_captions(out)
  assert captions.count("a photo of sks dog") == 5 and captions.count("a photo of a dog") == 5
  assert files[:3] == ["instance_0.png", "instance_1.png", "instance_0.png"]
  source = load_source(f"captioned:{out}", image_size=8, channels=3, tokenizer=_tokenize)
  np.testing.assert_array_equal(source[5]["image"], classes[0])
  with pytest.raises(ValueError, match="exists"):
    main([str(tmp_path / "subject"), str(tmp_path / "class.npz"), out,
          "--instance_prompt=x", "--class_prompt=y"])
