"""Flow matching, rectified flow (with reflow) and EDM against DDPM on the bundled digits, at
1, 2, 4, 8, 16 and 50 sampling steps, scored by the digits domain classifier.

  python benchmarks/continuous_digits.py --root /tmp/cont --num 500 \
      --plot docs/images/continuous_digits.png

Each method is one launch.py run under ROOT (trained first when ROOT/NAME has no checkpoint;
the wall time of each training is printed), all on ddpm_digits' U-Net (0.65M parameters),
optimizer, batch and 1,000 steps:

| name | config | trained as |
|---|---|---|
| ddpm | experiments/ddpm/digits.py | DDPM, eps, linear betas, T = 1000 |
| fm | experiments/ddpm/flow_matching_digits.py | flow matching, logit-normal t |
| rf | experiments/ddpm/rectified_flow_digits.py | rectified flow, uniform t |
| rf2 | experiments/ddpm/rectified_flow_digits.py:reflow | reflow of rf on 2,000 of its couples |
| edm | experiments/ddpm/edm_digits.py | EDM preconditioning, log-normal sigma |

Then every (method, sampler, steps) row draws `--num` samples (seed 0) and gets the columns of
`benchmarks/gan_digits.py` (domain FID, precision and recall against the digits train split,
classes covered); NFE is the number of network evaluations of one sample. The samplers: DDPM
with deterministic DDIM and DPM-Solver++(2M); the flows with Euler's method (the flow models'
DDIM) and Heun's; EDM with Euler and Heun (its Algorithm 2 without churn). `--plot` draws domain
FID and precision / recall against NFE, one line per row kind (needs matplotlib).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gan_digits  # noqa: E402  (the scoring of benchmarks/gan_digits.py, its flags included)

FLAGS = flags.FLAGS
flags.DEFINE_string("root", "/tmp/cont", "Work directories of the runs (ROOT/NAME).")
flags.DEFINE_list("steps", ["1", "2", "4", "8", "16", "50"], "Sampling steps.")
flags.DEFINE_list("only", [], "Score only these row kinds (default: all).")
flags.DEFINE_bool("train", True, "Train the runs ROOT lacks.")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (config, extra launch.py flags)
RUNS = {
    "ddpm": ("experiments/ddpm/digits.py", []),
    "fm": ("experiments/ddpm/flow_matching_digits.py", []),
    "rf": ("experiments/ddpm/rectified_flow_digits.py", []),
    "edm": ("experiments/ddpm/edm_digits.py", []),
    "rf2": ("experiments/ddpm/rectified_flow_digits.py:reflow",
            ["--config.init_from.workdir={root}/rf"]),
}

# row kind -> (run, sampling overrides, NFE of n steps)
ROWS = {
    "DDPM, DDIM (eta 0)": ("ddpm", "sample.sampler='ddim';sample.eta=0.0", lambda n: n),
    "DDPM, DPM-Solver++(2M)": ("ddpm", "sample.sampler='dpmpp_2m'", lambda n: n),
    "flow matching, Euler": ("fm", "sample.sampler='ode_euler'", lambda n: n),
    "flow matching, Heun": ("fm", "sample.sampler='ode_heun'", lambda n: 2 * n - 1),
    "rectified flow, Euler": ("rf", "sample.sampler='ode_euler'", lambda n: n),
    "2-rectified flow, Euler": ("rf2", "sample.sampler='ode_euler';init_from.workdir='{root}/rf'",
                                lambda n: n),
    "EDM, Euler": ("edm", "sample.sampler='euler'", lambda n: n),
    "EDM, Heun (Alg. 2)": ("edm", "sample.sampler='edm'", lambda n: 2 * n - 1),
}


def train(name: str) -> float | None:
  """Trains ROOT/NAME with launch.py unless it has checkpoints; its wall time (None: reused)."""
  workdir = os.path.join(FLAGS.root, name)
  if os.path.isdir(os.path.join(workdir, "checkpoints")):
    return None
  config, extra = RUNS[name]
  cmd = [sys.executable, os.path.join(REPO, "launch.py"), "--config", config,
         "--workdir", workdir, *(e.format(root=FLAGS.root) for e in extra)]
  start = time.perf_counter()
  subprocess.run(cmd, check=True, cwd=REPO)
  return time.perf_counter() - start


def plot(rows: list[dict], path: str) -> str:
  """Domain FID (left) and precision / recall (right) against NFE, one line per row kind."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, (ax_fid, ax_pr) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=120)
  for kind in dict.fromkeys(r["kind"] for r in rows):
    pts = sorted((r["nfe"], r) for r in rows if r["kind"] == kind)
    xs = [x for x, _ in pts]
    line, = ax_fid.plot(xs, [r["fid"] for _, r in pts], marker="o", label=kind)
    ax_pr.plot(xs, [r["precision"] for _, r in pts], marker="o", color=line.get_color())
    ax_pr.plot(xs, [r["recall"] for _, r in pts], marker="x", ls="--", color=line.get_color())
  for ax in (ax_fid, ax_pr):
    ax.set_xscale("log")
    ax.set_xlabel("network evaluations per sample")
    ax.grid(alpha=0.3)
  ax_fid.set_yscale("log")
  ax_fid.set_ylabel(f"domain FID ({FLAGS.num} samples)")
  ax_pr.set_ylabel("precision (o, solid) / recall (x, dashed)")
  ax_pr.set_ylim(0, 1.02)
  ax_fid.legend(fontsize=7)
  fig.suptitle("digits 16x16, one U-Net, 1,000 training steps each", fontsize=9)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path


def main(argv):
  del argv
  kinds = FLAGS.only or list(ROWS)
  unknown = sorted(set(kinds) - set(ROWS))
  if unknown:
    raise app.UsageError(f"--only: unknown rows {unknown}; known: {list(ROWS)}")
  if FLAGS.train:
    for name in dict.fromkeys(ROWS[k][0] for k in kinds):
      if name == "rf2" and "rf" not in [ROWS[k][0] for k in kinds]:
        train("rf")
      wall = train(name)
      print(f"train {name}: " + ("reused" if wall is None else f"{wall:.0f} s wall"), flush=True)
  specs, meta = [], []
  for kind in kinds:
    name, overrides, nfe = ROWS[kind]
    config = RUNS[name][0]
    for n in (int(s) for s in FLAGS.steps):
      specs.append(f"{config}={os.path.join(FLAGS.root, name)}@"
                   f"{overrides.format(root=FLAGS.root)};sample.steps={n}")
      meta.append({"kind": kind, "steps": n, "nfe": nfe(n)})
  start = time.perf_counter()
  reference, rows, num_train, _ = gan_digits.score(specs)
  rows = [{**r, **m} for r, m in zip(rows, meta, strict=True)]
  print(f"{FLAGS.num} samples per row (seed {FLAGS.seed}); precision / recall (k = "
        f"{FLAGS.pr_k}) and domain FID against the {num_train} train digits; scoring took "
        f"{time.perf_counter() - start:.0f} s")
  print("| model, sampler | steps | NFE | classes covered | precision | recall | domain FID |")
  print("|---|---|---|---|---|---|---|")
  print(f"| real held-out digits | - | - | {reference['classes']}/10 | "
        f"{reference['precision']:.3f} | {reference['recall']:.3f} | - |")
  for r in rows:
    print(f"| {r['kind']} | {r['steps']} | {r['nfe']} | {r['classes']}/10 | "
          f"{r['precision']:.3f} | {r['recall']:.3f} | {r['fid']:.2f} |")
  if FLAGS.plot:
    print(f"wrote {plot(rows, FLAGS.plot)}")


if __name__ == "__main__":
  app.run(main)
