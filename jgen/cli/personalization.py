"""Subject fidelity and prior drift of personalized runs (DreamBooth, textual inversion, LoRA),
an IP-Adapter's image prompts and an Imagic eta sweep, scored with the domain classifier
(`jgen.metrics.personalization`); prints Markdown tables.

  python -m jgen.cli.personalization --base /tmp/ddpm_cond_digits \
      --run dreambooth=/tmp/db_digits --run textual_inversion=/tmp/ti_digits
  python -m jgen.cli.personalization --image_prompt /tmp/ip_digits   # IP-Adapter
  python -m jgen.cli.personalization --imagic /tmp/imagic_digits     # Imagic's eta sweep
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from jgen import errors
from jgen.metrics import domain
from jgen.metrics.personalization import (digit_of, feature_fid, format_table,
                                          mean_pairwise_cosine, rowwise_cosine,
                                          trainable_count)
from jgen.train import inference, inputs, run_record, sampling, translations
from jgen.xla import set_cpu_xla_flags

log = logging.getLogger("jgen")

__all__ = ["evaluate_runs", "identity_across_prompts", "image_prompt_accuracy", "imagic_sweep",
           "main"]

IDENTITY_PROMPTS = ("", "a drawing", "a thick sketch", "a small picture")


def _examples(source) -> list[dict[str, Any]]:
  return [source[i] for i in range(len(source))]


def evaluate_runs(base_workdir: str, runs: dict[str, str], *, num: int = 100,
                  per_other_class: int = 20, seed: int = 0) -> list[dict[str, Any]]:
  """The table's rows: the base, then each personalized run (`jgen.metrics.personalization`)."""
  net = domain.load_feature_net("digits")
  first = run_record.latest_config(next(iter(runs.values())))
  subject_class = int(first.personalize.subject_class)
  subject = np.stack([np.asarray(x["image"]) for x in
                      _examples(inputs.load_data(first, split=first.data.split))])
  subject_out = net(subject)
  subject_feats = subject_out["features"]
  real_source = inputs.load_data(run_record.latest_config(base_workdir), split="train")
  real = _examples(real_source)
  real_images = np.stack([np.asarray(x["image"]) for x in real])
  real_labels = np.asarray([int(x["label"]) for x in real])
  others = [k for k in range(10) if k != subject_class]

  def row(name: str, workdir: str, identifier: int | None) -> dict[str, Any]:
    config = run_record.latest_config(workdir)
    method, mesh, state = inference.restore_for_inference(config, workdir)
    sampler = sampling.jit_sampler(method, mesh)

    def draw(labels, salt):
      return sampling.sample_images(sampler, state, config, num=len(labels), seed=seed + salt,
                                    labels=np.asarray(labels, np.int32))

    out: dict[str, Any] = {"run": name, "trainable": trainable_count(state),
                           "step": int(state.step)}
    if identifier is not None:
      v = draw([identifier] * num, 1)
      feats = net(v)
      out["fidelity"] = mean_pairwise_cosine(feats["features"], subject_feats)
      out["judged_c"] = float(np.mean(feats["logits"].argmax(-1) == subject_class))
    c = draw([subject_class] * num, 2)
    out["class_fidelity"] = mean_pairwise_cosine(net(c)["features"], subject_feats)
    out["class_fid"] = feature_fid(net, c, real_images[real_labels == subject_class])
    o = draw(np.repeat(others, per_other_class), 3)
    out["others_fid"] = feature_fid(net, o, real_images[np.isin(real_labels, others)])
    log.info("%s: %s", name, out)
    return out

  rows = [row("base", base_workdir, None)]
  for name, workdir in runs.items():
    k = int(run_record.latest_config(workdir).model.num_classes)
    rows.append(row(name, workdir, k))
  # The subject itself as "samples": the ceiling of fidelity.
  rows.insert(1, {"run": "subject images",
                  "fidelity": mean_pairwise_cosine(subject_feats, subject_feats),
                  "judged_c": float(np.mean(subject_out["logits"].argmax(-1) == subject_class))})
  return rows


def image_prompt_accuracy(workdir: str, *, num: int = 300, seed: int = 0,
                          scales: Sequence[float] = (0.0, 1.0)) -> list[dict[str, Any]]:
  """IP-Adapter: how often samples prompted by a held-out digit show that digit (the domain
  classifier's judgement), and their feature cosine to their own reference against a reference
  of the same digit they were not prompted by, at each image scale lambda (0: the adapter off,
  the empty prompt alone)."""
  net, config, method, mesh, state, held_out = _references(workdir, num)
  labels = held_out["label"]
  ref = net(held_out["source"])["features"]
  other = _other_reference(labels, seed)
  rows = []
  for scale in scales:
    variant = _with_image_scale(method, scale)
    images = translations.translate_all(variant, state, mesh, held_out["source"],
                                        batch_size=config.sample.batch_size, seed=seed)[:, 0]
    rows.append({"scale": float(scale), **_identity_scores(net(images), labels, ref, other)})
    log.info("image prompt, lambda %g: %s", scale, rows[-1])
  return rows


def _with_image_scale(method, scale: float):
  """An IP-Adapter method with the image scale lambda (0: the adapter off, the base model)."""
  unet = dataclasses.replace(method.ldm.ddpm.model, image_scale=float(scale))
  return dataclasses.replace(method, ldm=dataclasses.replace(
      method.ldm, ddpm=dataclasses.replace(method.ldm.ddpm, model=unet)))


def _references(workdir: str, num: int):
  """The digits judge, and the restored run of `workdir` with `num` held-out references."""
  net = domain.load_feature_net("digits")
  config = run_record.latest_config(workdir)
  method, mesh, state = inference.restore_for_inference(config, workdir)
  return net, config, method, mesh, state, translations.held_out_inputs(method, config, num)


def _identity_scores(out: dict[str, np.ndarray], labels: np.ndarray, ref: np.ndarray,
                     other: np.ndarray) -> dict[str, Any]:
  """Share of samples judged their reference's digit, and their feature cosine to their own
  reference against another reference of the same digit."""
  return {"num": len(labels), "accuracy": float(np.mean(out["logits"].argmax(-1) == labels)),
          "own_reference": rowwise_cosine(out["features"], ref),
          "other_reference": rowwise_cosine(out["features"], ref[other])}


def _other_reference(labels: np.ndarray, seed: int) -> np.ndarray:
  """For each held-out image, the index of another held-out image of the same digit."""
  rng = np.random.default_rng(seed)
  other = np.arange(len(labels))
  for k in np.unique(labels):
    idx = np.flatnonzero(labels == k)
    other[idx] = np.roll(idx, 1 + rng.integers(max(len(idx) - 1, 1)))
  return other


def identity_across_prompts(workdir: str, prompts: Sequence[str] = IDENTITY_PROMPTS, *,
                            num: int = 300, seed: int = 0) -> list[dict[str, Any]]:
  """Identity preservation of an identity-conditioned run (Face0, or IP-Adapter) across
  prompts: for each prompt, samples for `num` held-out references, the share the classifier
  judges the reference's digit and the feature cosine to their own reference against another
  reference of the same digit. An IP-Adapter run adds the base model's rows (lambda = 0: the
  adapter off, the prompt alone)."""
  net, config, method, mesh, state, held_out = _references(workdir, num)
  labels = held_out["label"]
  ref = net(held_out["source"])["features"]
  other = _other_reference(labels, seed)
  variants = [(config.method, method)]
  if config.method == "diffusion.ip_adapter":
    variants.append(("base (no identity)", _with_image_scale(method, 0.0)))
  rows = []
  for name, m in variants:
    for prompt in prompts:
      tokens = np.asarray(m.ldm.tokenizer.encode([prompt]), np.int32)[0] if prompt else None
      variant = dataclasses.replace(m, prompt_tokens=tokens)
      images = translations.translate_all(variant, state, mesh, held_out["source"],
                                          batch_size=config.sample.batch_size, seed=seed)[:, 0]
      rows.append({"run": name, "prompt": prompt or "(none)",
                   **_identity_scores(net(images), labels, ref, other)})
      log.info("identity: %s", rows[-1])
  return rows


def imagic_sweep(workdir: str, *, etas: Sequence[float] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
                 num: int = 64, seed: int = 0) -> list[dict[str, Any]]:
  """Imagic: for each eta, the share of `num` samples judged the target digit and judged the
  input's digit, and the mean pixel distance |x_eta - x|_2 / sqrt(HWC) to the input image x."""
  net = domain.load_feature_net("digits")
  config = run_record.latest_config(workdir)
  method, _, state = inference.restore_for_inference(config, workdir)
  source = inputs.load_data(config, split=config.data.split)
  example = source[0]
  x = np.asarray(example["image"], np.float32) / 127.5 - 1.0
  input_label = int(example["label"])
  words = method.ldm.tokenizer.decode(np.asarray(method.target_tokens)[None])[0].split()
  target_label = digit_of(words)
  draw = jax.jit(method.sample_eta, static_argnums=3)
  rows = []
  for i, eta in enumerate(etas):
    images = np.asarray(draw(state, jax.random.fold_in(jax.random.key(seed), i), eta, num))
    judged = net(images)["logits"].argmax(-1)
    rows.append({"eta": float(eta), "target": float(np.mean(judged == target_label)),
                 "input_class": float(np.mean(judged == input_label)),
                 "distance": float(np.mean(np.sqrt(np.mean((images - x) ** 2,
                                                            axis=(1, 2, 3)))))})
    log.info("imagic eta %g: %s", eta, rows[-1])
  return rows


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
  p = argparse.ArgumentParser(prog="python -m jgen.cli.personalization",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--base", help="work directory of the base model")
  p.add_argument("--run", action="append", default=[], metavar="NAME=WORKDIR",
                 help="a personalized run (repeat)")
  p.add_argument("--image_prompt", metavar="WORKDIR", help="an IP-Adapter run: accuracy of the "
                 "reference's digit at lambda 0 and 1")
  p.add_argument("--imagic", metavar="WORKDIR", help="an Imagic run: the eta sweep")
  p.add_argument("--identity", action="append", default=[], metavar="WORKDIR",
                 help="a Face0 or IP-Adapter run (repeat): identity across prompts")
  p.add_argument("--num", type=int, default=100, help="samples of [V] and of the class")
  p.add_argument("--per_other_class", type=int, default=20)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--verbose", action="store_true", help=errors.VERBOSE_HELP)
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO)
  if args.image_prompt:
    rows = image_prompt_accuracy(args.image_prompt, num=args.num * 3, seed=args.seed)
    print("| lambda | digit of the reference | cosine to own reference | to another of its digit |"
          "\n|---|---|---|---|")
    for r in rows:
      print(f"| {r['scale']:g} | {r['accuracy']:.3f} | {r['own_reference']:.3f} | "
            f"{r['other_reference']:.3f} |")
    return rows
  if args.identity:
    rows = [r for w in args.identity for r in identity_across_prompts(w, num=args.num * 3,
                                                                       seed=args.seed)]
    print("| run | prompt | digit of the reference | cosine to own reference | to another of "
          "its digit |\n|---|---|---|---|---|")
    for r in rows:
      print(f"| {r['run']} | {r['prompt']} | {r['accuracy']:.3f} | {r['own_reference']:.3f} | "
            f"{r['other_reference']:.3f} |")
    return rows
  if args.imagic:
    rows = imagic_sweep(args.imagic, num=args.num, seed=args.seed)
    print("| eta | judged target | judged input's digit | RMS distance to the input |"
          "\n|---|---|---|---|")
    for r in rows:
      print(f"| {r['eta']:g} | {r['target']:.2f} | {r['input_class']:.2f} | "
            f"{r['distance']:.3f} |")
    return rows
  if not args.base or not args.run:
    p.error("give --base and --run (subject fidelity), or --image_prompt, or --imagic")
  runs = {}
  for item in args.run:
    name, sep, workdir = item.partition("=")
    if not sep or not name or not workdir:
      p.error(f"--run {item!r}: write NAME=WORKDIR")
    runs[name] = workdir
  rows = evaluate_runs(args.base, runs, num=args.num, per_other_class=args.per_other_class,
                       seed=args.seed)
  print(format_table(rows))
  return rows


if __name__ == "__main__":
  set_cpu_xla_flags()
  with errors.reported("python -m jgen.cli.personalization"):
    main(sys.argv[1:])
