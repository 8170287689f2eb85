"""Perfusion concepts (`jgen.diffusion.perfusion`): export a trained run's concept file, sample
prompts with one or several concept files, and score subject fidelity against drift.

  python -m jgen.cli.perfusion export --run /tmp/perf_7 --out /tmp/sks.safetensors
  python -m jgen.cli.perfusion sample --run /tmp/perf_7 --concept /tmp/sks.safetensors \
      --concept /tmp/zwx.safetensors --prompt "a handwritten sks" --prompt "zwx" \
      --bias 0.7 --temperature 0.15 --out /tmp/grid.png
  python -m jgen.cli.perfusion score --run /tmp/perf_7 --concept sks=/tmp/sks.safetensors
  python -m jgen.cli.perfusion combine --run /tmp/perf_7 --run /tmp/perf_3
  python -m jgen.cli.perfusion combine --run /tmp/perf_c7 --run /tmp/perf_c3  # on a canvas

``--run`` is any Perfusion run of the base (its U-Net, text encoder, first stage and C^-1 are
the base's; its own concept is used only through the file ``export`` writes).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from jgen import errors
from jgen.diffusion import perfusion as perf
from jgen.diffusion import sd_perfusion
from jgen.metrics import domain
from jgen.metrics.personalization import feature_fid, mean_pairwise_cosine
from jgen.nn import text as text_lib
from jgen.train import inference, inputs, run_record
from jgen.train.writers import save_image_grid
from jgen.xla import set_cpu_xla_flags

log = logging.getLogger("jgen")

__all__ = ["canvas_combine", "combine", "export", "main", "sample", "score"]


def _restore(workdir: str):
  config = run_record.latest_config(workdir)
  method, _, state = inference.restore_for_inference(config, workdir)
  if not isinstance(method, perf.Perfusion):
    raise errors.ConfigError(f"{workdir} is a {config.method} run, not diffusion.perfusion")
  return config, method, state


def export(workdir: str, out: str) -> perf.Concept:
  """Writes the concept of a Perfusion run (its EMA parameters) to `out`: a
  ``diffusion.perfusion`` run or a Stable Diffusion one (``diffusion.sd_perfusion``)."""
  config = run_record.latest_config(workdir)
  method, _, state = inference.restore_for_inference(config, workdir)
  if not isinstance(method, (perf.Perfusion, sd_perfusion.SDPerfusion)):
    raise errors.ConfigError(f"{workdir} is a {config.method} run, not diffusion.perfusion or "
                             "diffusion.sd_perfusion")
  concept = method.concept(jax.device_get(state.ema_params), jax.device_get(state.frozen))
  perf.save_concept(out, concept)
  log.info("concept %r (%s): %d trained numbers, %d bytes in %s", concept.word,
           concept.superordinate, concept.num_parameters, os.path.getsize(out), out)
  return concept


def sample(workdir: str, concept_files: Sequence[str], prompts: Sequence[str], *,
           gate: perf.Gate, seed: int = 0, state_and_method: Any = None) -> np.ndarray:
  """Images [len(prompts), H, W, C] in [-1, 1] of the prompts with the concept files."""
  if state_and_method is None:
    _, method, state = _restore(workdir)
  else:
    method, state = state_and_method
  concepts = [perf.load_concept(f) for f in concept_files]
  return np.asarray(perf.sample_concepts(method.ldm, state, concepts,
                                         state.frozen[perf.PERFUSION]["c_inv"], prompts,
                                         jax.random.key(seed), g=gate))


def _canvas(config) -> int:
  return max(1, int(config.data.get("canvas", 0) or 0))


def _slots(images: np.ndarray, count: int) -> list[np.ndarray]:
  """The `count` digits of canvases [N, H, count W, C], left to right, each [N, H, W, C]."""
  return np.split(np.asarray(images), count, axis=2)


def _subject_features(net, config) -> np.ndarray:
  """Features of the run's subject images (on a canvas: the left slots, which at epoch 0 hold
  the selected images in order)."""
  source = inputs.load_data(config, split=config.data.split)
  images = np.stack([np.asarray(source[i]["image"]) for i in range(len(source))])
  return net(_slots(images, _canvas(config))[0])["features"]


def score(workdir: str, concepts: dict[str, str], *, num: int = 100, per_other: int = 20,
          gate: perf.Gate, seed: int = 0) -> list[dict[str, Any]]:
  """Rows of subject fidelity and drift (`jgen.metrics.personalization`'s scores): for the base
  (no concept) and each concept file, "a handwritten [V]" (fidelity to the run's subject
  images), "a handwritten <superordinate>" (its fidelity to the subject: drift toward it, and
  domain FID against the real digits of that class) and the other digits (domain FID)."""
  config, method, state = _restore(workdir)
  net = domain.load_feature_net("digits")
  subject_feats = _subject_features(net, config)
  real_source = inputs.load_data(run_record.latest_config(
      config.init_from.base.workdir), split="train")
  real = [real_source[i] for i in range(len(real_source))]
  real_images = np.stack([np.asarray(x["image"]) for x in real])
  real_labels = np.asarray([int(x["label"]) for x in real])
  k = method.subject_class
  others = [d for d in range(10) if d != k]
  class_prompt = text_lib.default_prompt(k)
  other_prompts = [text_lib.default_prompt(d) for d in others for _ in range(per_other)]

  def draw(files, prompts, salt):
    return sample(workdir, files, prompts, gate=gate, seed=seed + salt,
                  state_and_method=(method, state))

  rows = [{"run": "subject images",
           "fidelity": mean_pairwise_cosine(subject_feats, subject_feats)}]
  for name, file in [("base", None), *concepts.items()]:
    files = [] if file is None else [file]
    row: dict[str, Any] = {"run": name}
    if file is not None:
      c = perf.load_concept(file)
      row["trainable"] = c.num_parameters
      row["bytes"] = os.path.getsize(file)
      if "+unet:" in c.base:  # DreamBooth: the row goes with its run's fine-tuned U-Net
        unet = jax.tree.leaves(state.ema_params["unet"])
        row["trainable"] += sum(int(np.size(x)) for x in unet)
        row["bytes"] += sum(int(np.asarray(x).nbytes) for x in unet)
      v = draw(files, [f"a handwritten {c.word}"] * num, 1)
      out = net(v)
      row["fidelity"] = mean_pairwise_cosine(out["features"], subject_feats)
      row["judged_c"] = float(np.mean(out["logits"].argmax(-1) == k))
    cls = draw(files, [class_prompt] * num, 2)
    row["class_fidelity"] = mean_pairwise_cosine(net(cls)["features"], subject_feats)
    row["class_fid"] = feature_fid(net, cls, real_images[real_labels == k])
    o = draw(files, other_prompts, 3)
    row["others_fid"] = feature_fid(net, o, real_images[np.isin(real_labels, others)])
    row["others_judged"] = float(np.mean(
        net(o)["logits"].argmax(-1) == np.repeat(others, per_other)))
    log.info("%s: %s", name, row)
    rows.append(row)
  return rows


def combine(workdirs: Sequence[str], *, num: int = 100, gate: perf.Gate, seed: int = 0
            ) -> list[dict[str, Any]]:
  """Several concepts in one model at once: for each run's concept, the fidelity of "a
  handwritten [V]" to its own subject and to the other runs' subjects, with its file alone and
  with every run's file loaded (interference of combining concepts without retraining), and
  the share judged its superordinate digit."""
  net = domain.load_feature_net("digits")
  runs = [_restore(w) for w in workdirs]
  concepts = [m.concept(s.ema_params, s.frozen) for _, m, s in runs]
  subjects = [_subject_features(net, c) for c, _, _ in runs]
  _, method, state = runs[0]
  c_inv = state.frozen[perf.PERFUSION]["c_inv"]
  rows = []
  for i, concept in enumerate(concepts):
    for loaded in ([concept], concepts):
      images = np.asarray(perf.sample_concepts(
          method.ldm, state, loaded, c_inv, [f"a handwritten {concept.word}"] * num,
          jax.random.key(seed + i), g=gate))
      out = net(images)
      rows.append({"concept": concept.word, "loaded": "+".join(c.word for c in loaded),
                   "own": mean_pairwise_cosine(out["features"], subjects[i]),
                   "others": [mean_pairwise_cosine(out["features"], f)
                              for j, f in enumerate(subjects) if j != i],
                   "judged": float(np.mean(out["logits"].argmax(-1) ==
                                           runs[i][1].subject_class))})
      log.info("combine: %s", rows[-1])
  return rows


def _named(word: str) -> str:
  return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def canvas_combine(workdirs: Sequence[str], *, num: int = 100, gate: perf.Gate, seed: int = 0
                   ) -> list[dict[str, Any]]:
  """Two concepts of the canvas base in one image: "a sks and a zwx" with both files loaded,
  each slot scored against the subject of the concept named there (fidelity, and the share
  judged its superordinate digit); beside it the base's "a seven and a three" (where the
  subjects' classes stand without concepts) and each concept alone beside the other's class.

  Raises:
    ConfigError: not two runs, or runs that are not on a canvas of two digits.
  """
  if len(workdirs) != 2:
    raise errors.ConfigError(f"combine on a canvas takes two Perfusion runs, got "
                             f"{len(workdirs)}")
  net = domain.load_feature_net("digits")
  runs = [_restore(w) for w in workdirs]
  if any(_canvas(c) != 2 for c, _, _ in runs):
    raise errors.ConfigError("canvas_combine scores two-digit canvases: train both concepts "
                             "with perfusion_digits.py:canvas on a text_canvas_digits base")
  concepts = [m.concept(s.ema_params, s.frozen) for _, m, s in runs]
  classes = [m.subject_class for _, m, _ in runs]
  subjects = {k: _subject_features(net, c) for k, (c, _, _) in zip(classes, runs)}
  _, method, state = runs[0]
  c_inv = state.frozen[perf.PERFUSION]["c_inv"]
  digit = [text_lib.DIGIT_WORDS[k] for k in classes]
  word = [c.word for c in concepts]
  plans = [((digit[0], digit[1]), []), ((digit[1], digit[0]), []),
           ((word[0], digit[1]), [concepts[0]]), ((digit[0], word[1]), [concepts[1]]),
           ((word[0], word[1]), concepts), ((word[1], word[0]), concepts)]
  slot_class = {**dict(zip(digit, classes)), **dict(zip(word, classes))}
  rows = []
  for i, (names, loaded) in enumerate(plans):
    prompt = " and ".join(_named(n) for n in names)
    images = np.asarray(perf.sample_concepts(method.ldm, state, loaded, c_inv, [prompt] * num,
                                             jax.random.key(seed + i), g=gate))
    row: dict[str, Any] = {"prompt": prompt,
                           "loaded": "+".join(c.word for c in loaded) or "none"}
    for side, (name, half) in zip(("left", "right"), zip(names, _slots(images, 2))):
      k = slot_class[name]
      out = net(half)
      row[side] = {"fidelity": mean_pairwise_cosine(out["features"], subjects[k]),
                   "judged": float(np.mean(out["logits"].argmax(-1) == k))}
    log.info("canvas combine: %s", row)
    rows.append(row)
  return rows


def format_rows(rows: list[dict[str, Any]], k: int) -> str:
  def f(v, fmt):
    return "—" if v is None else format(v, fmt)
  lines = [f"| run | trained numbers | file bytes (+ U-Net) | [V] fidelity | [V] judged {k} "
           f"| {k} fidelity (drift) | {k} domain FID | other digits domain FID "
           "| other digits judged right |",
           "|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['run']} | {f(r.get('trainable'), ',')} | {f(r.get('bytes'), ',')} | "
                 f"{f(r.get('fidelity'), '.3f')} | {f(r.get('judged_c'), '.2f')} | "
                 f"{f(r.get('class_fidelity'), '.3f')} | {f(r.get('class_fid'), '.1f')} | "
                 f"{f(r.get('others_fid'), '.1f')} | {f(r.get('others_judged'), '.2f')} |")
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> Any:
  p = argparse.ArgumentParser(prog="python -m jgen.cli.perfusion", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="command", required=True)
  e = sub.add_parser("export", help="write a run's concept file")
  e.add_argument("--run", required=True)
  e.add_argument("--out", required=True)
  cb = sub.add_parser("combine", help="several concepts at once: fidelity alone and combined")
  cb.add_argument("--run", action="append", required=True, help="a Perfusion run (repeat)")
  cb.add_argument("--num", type=int, default=100)
  for name in ("sample", "score", "combine"):
    s = cb if name == "combine" else sub.add_parser(name)
    s.add_argument("--bias", type=float, default=0.7, help="the gate's beta at sampling")
    s.add_argument("--temperature", type=float, default=0.15,
                   help="the gate's tau at sampling (0: no gate)")
    s.add_argument("--seed", type=int, default=0)
    if name == "combine":
      continue
    s.add_argument("--run", required=True, help="a Perfusion run of the base")
    s.add_argument("--concept", action="append", default=[],
                   help="a concept file (repeat)" if name == "sample" else "NAME=FILE (repeat)")
    if name == "sample":
      s.add_argument("--prompt", action="append", required=True, help="one per image (repeat)")
      s.add_argument("--out", required=True, help="PNG grid")
    else:
      s.add_argument("--num", type=int, default=100)
      s.add_argument("--per_other", type=int, default=20)
  p.add_argument("--verbose", action="store_true", help=errors.VERBOSE_HELP)
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO)
  if args.command == "export":
    return export(args.run, args.out)
  gate = perf.Gate(args.bias, args.temperature)
  if args.command == "combine" and _canvas(run_record.latest_config(args.run[0])) > 1:
    rows = canvas_combine(args.run, num=args.num, seed=args.seed, gate=gate)
    print("| prompt | concept files | left: fidelity to its subject | left: judged its digit "
          "| right: fidelity to its subject | right: judged its digit |\n|---|---|---|---|---|---|")
    for r in rows:
      print(f"| {r['prompt']} | {r['loaded']} | {r['left']['fidelity']:.3f} | "
            f"{r['left']['judged']:.2f} | {r['right']['fidelity']:.3f} | "
            f"{r['right']['judged']:.2f} |")
    return rows
  if args.command == "combine":
    rows = combine(args.run, num=args.num, seed=args.seed, gate=gate)
    print("| concept | files loaded | fidelity to its subject | to the other subject | judged "
          "its digit |\n|---|---|---|---|---|")
    for r in rows:
      print(f"| {r['concept']} | {r['loaded']} | {r['own']:.3f} | "
            f"{', '.join(f'{v:.3f}' for v in r['others'])} | {r['judged']:.2f} |")
    return rows
  if args.command == "sample":
    images = sample(args.run, args.concept, args.prompt, gate=gate, seed=args.seed)
    save_image_grid(images, args.out)
    return images
  concepts = {}
  for item in args.concept:
    name, sep, file = item.partition("=")
    if not sep or not name or not file:
      p.error(f"--concept {item!r}: write NAME=FILE")
    concepts[name] = file
  config = run_record.latest_config(args.run)
  rows = score(args.run, concepts, num=args.num, per_other=args.per_other, gate=gate,
               seed=args.seed)
  print(format_rows(rows, int(config.perfusion.subject_class)))
  return rows


if __name__ == "__main__":
  set_cpu_xla_flags()
  with errors.reported("python -m jgen.cli.perfusion"):
    main(sys.argv[1:])
