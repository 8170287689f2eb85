"""CIFAR-10 at the scale of this machine: DDPM, StyleGAN2-ADA, a VQ-GAN first stage with latent
diffusion on it, and flow matching, each trained for a wall-time budget and scored with the FID
Inception against the training images' statistics.

  python benchmarks/cifar_ladder.py --root /tmp/cifar_ladder                # all, 45 min each
  python benchmarks/cifar_ladder.py --root /tmp/cifar_ladder --models ddpm,flow_matching
  python benchmarks/cifar_ladder.py --root /tmp/cifar_ladder --stage table --plot docs/images
  python benchmarks/cifar_ladder.py --root /tmp/ladder_smoke --smoke --curve_points 2  # plumbing

Data: `../shared/data/cifar10-jpeg.zip` (`--data`; a JPEG copy of CIFAR-10's 50,000 / 10,000
images, so figures are close to, not equal to, those on the PNG originals), read as
`folder:<zip>` with x-flips.

Each model is its CIFAR config (`experiments/ddpm/cifar.py`, `gan/stylegan2_cifar.py`,
`first_stage/vqgan_cifar.py`, `ldm/cifar.py` on the VQ-GAN run, `ddpm/flow_matching_cifar.py`)
with the CPU sizes of `MODELS` (the papers' networks take GPU days): a constant learning rate
after warm-up, so that the budget (`--budget_min`, SIGTERM: the loop saves the step it is at)
may stop a run anywhere, and a checkpoint every `curve_every` steps, all kept. Then:

* the curve: `--mode=eval` of up to `--curve_points` kept checkpoints (`eval.checkpoint_step`),
  FID of `--curve_samples` EMA samples each (FID of fewer samples is biased upward: the curve
  shows the trend, the table gives FID-10k);
* the table: FID of `--num_samples` (10,000) EMA samples of the last checkpoint, precision and
  recall (k = 3), each against a seeded random `--reference_images` (10,000) of the 50,000
  training images (their statistics and features computed once and cached,
  `jgen.metrics.fid.reference_stats`), and
  the VQ-GAN's reconstruction of the 10,000 test images (rFID, PSNR, LPIPS-AlexNet);
* `--plot DIR`: `DIR/cifar_ladder_fid.png` (FID against training steps, one line per model)
  and each model's newest sample grid as `DIR/cifar_<model>.png`.

Results go to `ROOT/results.json` (an interrupted ladder resumes; `--retrain` starts a model
again in a fresh work directory). The published figures beside each row are the papers' at full
scale, with the compute they took (`PUBLISHED`).
"""

from __future__ import annotations

import dataclasses
import os

from absl import app, flags

import budget_runs

FLAGS = flags.FLAGS
flags.DEFINE_string("root", "/tmp/cifar_ladder", "Parent of the work directories.")
flags.DEFINE_string("data", "../shared/data/cifar10-jpeg.zip",
                    "CIFAR-10: a .zip or folder with train/<class>/ and test/<class>/ images "
                    "(a relative path is from the repository root; it is made absolute, the "
                    "spelling of benchmarks/ddpm_parity.py's --zip, so that the two share the "
                    "cached statistics of the same subset).")
flags.DEFINE_list("models", None, "Models to run, in order (default: all; ldm needs vqgan).")
flags.DEFINE_enum("stage", "all", ["all", "train", "eval", "table"], "What to do.")
flags.DEFINE_bool("retrain", False, "Train a model again, from scratch (its old work directory "
                  "is renamed, not resumed).")
flags.DEFINE_float("budget_min", 45.0, "Training wall-time budget per model, in minutes.")
flags.DEFINE_integer("num_samples", 10000, "Samples of the final FID (and its P&R).")
flags.DEFINE_integer("reference_images", 10000,
                     "Training images of the FID statistics and the P&R features: a seeded "
                     "random subset (eval.seed 0), 0 for all 50,000.")
flags.DEFINE_integer("curve_points", 4, "Kept checkpoints scored for the FID curve.")
flags.DEFINE_integer("curve_samples", 2000, "Samples per FID of the curve.")
flags.DEFINE_string("plot", None, "If set, write the FID curve and the sample grids there.")
flags.DEFINE_bool("smoke", False, "4 steps at batch 8 of each model, 64 samples against 64 "
                  "training images: checks the plumbing, not the models.")


@dataclasses.dataclass(frozen=True)
class Model:
  """One rung: its config, the CPU overrides, what --mode=eval scores and how it samples."""
  config: str
  cpu: tuple[str, ...]
  curve_every: int
  metrics: str = "fid,pr"
  sample: tuple[str, ...] = ()
  needs: str | None = None    # a model whose work directory init_from reads


# One U-Net for the two pixel-space objectives, so that they compare, and the one of
# benchmarks/ddpm_parity.py: 16 channels at 32x32, (1, 2, 2) multipliers (32 -> 16 -> 8), one
# residual block per level, attention at 16x16, no dropout (0.28M parameters; the papers' is
# 128 channels, (1, 2, 2, 2), two blocks: 35.7M). Its train step at batch 64 took 0.56 s on
# this CPU in the parity run: about 4,800 steps in 45 minutes.
_UNET = ("model.ch=16", "model.ch_mult=(1,2,2)", "model.num_res_blocks=1",
         "model.attn_resolutions=(16,)", "model.num_groups=8", "model.dropout=0.0",
         "data.batch_size=64", "optim.warmup_steps=200", "train.ema_decay=0.999",
         "train.ema_warmup=True")

# Both pixel-space models sample with 50 network evaluations: DDIM-50 (the DDPM configs' default)
# and 50 Euler steps of the flow's ODE. Drawing 2,000 DDIM-100 samples of this U-Net took 466 s
# in the parity run, so 100 steps would spend about 39 minutes drawing the FID-10k's samples.
_SAMPLE_50 = ("sample.steps=50",)

MODELS: dict[str, Model] = {
    "ddpm": Model("experiments/ddpm/cifar.py", _UNET, curve_every=250,
                  sample=("sample.sampler=ddim", *_SAMPLE_50)),
    # 64 channels at every resolution and im2col convolutions: at 128 channels a step took
    # 6.3 s on this CPU (about 430 steps in the budget), at 64 2.2 s. With the config's
    # `lax.conv`, a lazy R1 step (the discriminator's double gradient inside `lax.cond`,
    # docs/guide/performance.md) had not finished after 10 minutes at 128 channels.
    "stylegan2": Model(
        "experiments/gan/stylegan2_cifar.py",
        ("model.features=(64,64,64,64)", "model.conv=im2col", "model.z_dim=128",
         "model.w_dim=128", "model.mbstd_group=4",
         # G's EMA half-life of 10k images (the paper's 500k is 7,800 of these steps) and ADA's
         # p adjusted 0 -> 1 over 100k images (500k in the paper) for a run of about 100k.
         f"train.ema_decay={0.5 ** (64 / 10_000)}", "gan.ada_kimg=100.0"),
        curve_every=250),
    # LPIPS-VGG and the critic, not the autoencoder, set the step's cost on this CPU (at batch
    # 32 with the GAN term: 7.7 s per step at 64 channels, 6.5 s at 32), so the rung keeps 64
    # channels and halves the batch. The GAN term runs from step 0 (LDM's vq-f4 does) and
    # inline: under `loss.skip_before_start`'s `lax.cond` its steps took 11.9 s, and the steps
    # before the start 5.7 s (docs/results.md, "The VQ-GAN's size").
    "vqgan": Model(
        "experiments/first_stage/vqgan_cifar.py",
        ("model.ch=64", "model.num_res_blocks=1", "data.batch_size=16",
         "optim.schedule=constant", "optim.warmup_steps=100", "loss.disc_start=0"),
        curve_every=150, metrics="rfid,lpips"),
    # The config's learning rate (LDM's 1e-6 x batch 128) at half its batch, as the DDPM rung
    # keeps Ho et al.'s 2e-4 at 64; its 10,000 warm-up steps would be longer than the budget's
    # run, so 200 as the pixel-space rungs.
    "ldm": Model(
        "experiments/ldm/cifar.py",
        ("model.ch=64", "model.num_res_blocks=1", "data.batch_size=64",
         "optim.warmup_steps=200", "train.ema_decay=0.999", "train.ema_warmup=True"),
        curve_every=250, needs="vqgan"),
    "flow_matching": Model("experiments/ddpm/flow_matching_cifar.py", _UNET, curve_every=250,
                           sample=("sample.sampler=ode_euler", *_SAMPLE_50)),
}

# The papers' CIFAR-10 figures at full scale and what they took (for the table's last column).
PUBLISHED = {
    "ddpm": "FID 3.17 (Ho et al. 2020, 50k samples vs train; 35.7M U-Net, 800k steps at batch "
            "128, 10.6 h on a TPU v3-8)",
    "stylegan2": "FID 2.42 (Karras et al. 2020, ADA, class-conditional: the abstract's record; "
                 "512 channels, 100M images at batch 64)",
    "vqgan": "none on CIFAR-10; LDM's vq-f4 (the same f = 4, 8192 x 3-d codes): rFID 0.58, "
             "PSNR 27.43 on ImageNet val at 256x256 after 533k steps on OpenImages (the "
             "latent-diffusion model zoo)",
    "ldm": "none on CIFAR-10; LDM-4-G on ImageNet 256 (class-conditional, classifier-free "
           "guidance, 250 DDIM steps): FID 3.60 with 400M parameters and 271 V100-days "
           "(Rombach et al. 2022)",
    "flow_matching": "FID 6.35 (Lipman et al. 2023, OT path, dopri5 at 142 NFE; ADM U-Net)",
}


def _data() -> str:
  return str((budget_runs.REPO / FLAGS.data).resolve())


def _workdir(name: str) -> str:
  return os.path.join(FLAGS.root, name)


def _overrides(name: str, mode: str, *, step: int | None = None,
               num: int | None = None) -> list[str]:
  m = MODELS[name]
  out = [f"data.source=folder:{_data()}", *m.cpu, *m.sample, "train.num_steps=1000000",
         f"train.checkpoint_every={m.curve_every}", "train.keep_checkpoints=1000",
         "train.log_every=50", "train.eval_every=0", "train.sample_every=0"]
  if FLAGS.smoke:
    out += ["train.num_steps=4", "train.checkpoint_every=2", "data.batch_size=8",
            "sample.num=8", "sample.batch_size=8"]
  if m.needs:
    out.append(f"init_from.workdir={_workdir(m.needs)}")
  if mode == "eval":
    n = num or FLAGS.num_samples
    metrics = m.metrics if step is None else m.metrics.replace(",pr", "")  # the curve: FID
    # 250 images per sampling call, as in the parity run: the DDPM rung's first curve point
    # (2,000 DDIM-50 samples and their Inception pass) took 8 min 56 s so, and had not
    # finished after 12 minutes at the configs' 64 per call.
    out += [f"eval.metrics={metrics}", "eval.features=inception",
            f"eval.num_samples={n}", "eval.reference_split=train"]
    if not FLAGS.smoke:
      out.append("sample.batch_size=250")
    ref = 64 if FLAGS.smoke else FLAGS.reference_images
    if ref:
      out.append(f"eval.reference_max_images={ref}")
    if "pr" in metrics:
      # The FID's reference subset, so that one Inception pass serves both.
      out.append(f"eval.num_reference_features={ref or n}")
  if step is not None:
    out.append(f"eval.checkpoint_step={step}")
  return out


def _config(name: str) -> str:
  return MODELS[name].config


def _curve_steps(steps: list[int], points: int) -> list[int]:
  """Up to `points` of the kept steps, evenly spread, the last always included."""
  if len(steps) <= points:
    return steps
  if points <= 1:
    return steps[-1:]
  idx = [round(i * (len(steps) - 1) / (points - 1)) for i in range(points)]
  return sorted({steps[i] for i in idx})


def _sample_scores(record: dict) -> dict:
  return record.get("sample_metrics", {}) or {}


def train_and_eval(name: str, results: budget_runs.Results) -> None:
  r = results.record(name)
  workdir = _workdir(name)
  budget = FLAGS.budget_min * 60
  if FLAGS.stage in ("all", "train") and ("train_s" not in r or FLAGS.retrain):
    if FLAGS.retrain:
      budget_runs.set_aside(workdir)
    r.clear()
    r["train_s"] = budget_runs.launch(_config(name), workdir, "train", _overrides(name, "train"),
                                      budget_s=budget)
    r["steps"] = budget_runs.checkpoint_steps(workdir)[-1]
    results.save()
  if FLAGS.stage not in ("all", "eval") or "train_s" not in r:
    return
  steps = budget_runs.checkpoint_steps(workdir)
  curve = r.setdefault("curve", {})
  for step in _curve_steps(steps, FLAGS.curve_points)[:-1]:
    if str(step) in curve:
      continue
    num = 64 if FLAGS.smoke else FLAGS.curve_samples
    budget_runs.launch(_config(name), workdir, "eval",
                       _overrides(name, "eval", step=step, num=num))
    curve[str(step)] = _sample_scores(budget_runs.eval_record(workdir, step))
    results.save()
  if "eval" not in r:
    num = 64 if FLAGS.smoke else FLAGS.num_samples
    r["eval_s"] = budget_runs.launch(_config(name), workdir, "eval",
                                     _overrides(name, "eval", num=num))
    r["eval"] = budget_runs.eval_record(workdir, steps[-1])
    r["num_samples"] = num
    curve[str(steps[-1])] = _sample_scores(r["eval"])
    budget_runs.launch(_config(name), workdir, "sample", _overrides(name, "sample"))
    results.save()


def table(data: dict) -> str:
  rows = ["| model | steps | train wall (min) | FID (samples) | precision | recall "
          "| reconstruction (test) | eval wall (min) | published, full scale |",
          "|---|---|---|---|---|---|---|---|---|"]
  fmt = budget_runs.fmt
  for name in MODELS:
    r = data.get(name)
    if not r or "eval" not in r:
      continue
    ev = r["eval"]
    s = _sample_scores(ev)
    # A first stage's rFID, LPIPS and PSNR over every test image (its sample metrics), not the
    # eval loss's PSNR of a few batches.
    scores = {**ev, **s}
    rec = ", ".join(f"{k} {scores[k]:.3f}" for k in ("rfid", "psnr", "lpips") if k in scores)
    fid = f"{fmt(s['fid'], 1)} ({r.get('num_samples', '-')})" if "fid" in s else "-"
    rows.append(f"| {name} | {r['steps']} | {fmt(r['train_s'] / 60, 1)} | {fid} "
                f"| {fmt(s.get('precision'), 3)} | {fmt(s.get('recall'), 3)} | {rec or '-'} "
                f"| {fmt(r.get('eval_s', 0) / 60, 1)} | {PUBLISHED[name]} |")
  return "\n".join(rows)


def plot(data: dict, out_dir: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  os.makedirs(out_dir, exist_ok=True)
  fig, ax = plt.subplots(figsize=(6, 4))
  for name, r in data.items():
    # Generators: FID of samples against the training images; first stages: rFID of the test
    # images' reconstructions against the test images.
    key = "rfid" if MODELS[name].metrics.startswith("rfid") else "fid"
    points = sorted((int(k), v[key]) for k, v in r.get("curve", {}).items() if key in v)
    if points:
      ax.plot(*zip(*points), marker="o", label=f"{name} (rFID, test)" if key == "rfid" else name)
  ax.set_xlabel("training steps")
  ax.set_ylabel("FID of samples vs train (rFID: test)")
  ax.set_yscale("log")
  ax.set_title(f"CIFAR-10 on 2 CPU cores, {FLAGS.budget_min:g} min per model")
  ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(out_dir, "cifar_ladder_fid.png"), dpi=100)
  for name in data:
    budget_runs.copy_newest_grid(_workdir(name), os.path.join(out_dir, f"cifar_{name}.png"))


def main(argv):
  del argv
  try:
    names = budget_runs.selected(FLAGS.models, list(MODELS))
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  if FLAGS.stage != "table" and not os.path.exists(_data()):
    raise app.UsageError(f"no CIFAR-10 at {FLAGS.data}: pass --data (a .zip or folder with "
                         "train/<class>/ and test/<class>/ images)")
  results = budget_runs.Results(os.path.join(FLAGS.root, "results.json"))
  for name in names:
    needs = MODELS[name].needs
    if needs and FLAGS.stage != "table" and not os.path.isdir(_workdir(needs)):
      raise app.UsageError(f"{name} trains on the {needs} run: run --models {needs} first")
    train_and_eval(name, results)
  ref = FLAGS.reference_images or 50_000
  print(f"\nCIFAR-10, {FLAGS.budget_min:g} minutes of 2 CPU cores per model; FID against "
        f"{ref:,} of the 50,000 training images (FID Inception)\n")
  print(table(results.data))
  if FLAGS.plot:
    plot(results.data, FLAGS.plot)


if __name__ == "__main__":
  app.run(main)
