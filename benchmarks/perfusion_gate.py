"""Where a trained Perfusion concept's gate opens: alpha = x^T C^-1 i* / (i*^T C^-1 i*) of the
text encoder's output x at every position of a few prompts (`jgen.diffusion.perfusion`).

  python benchmarks/perfusion_gate.py /tmp/perf_7 "" "a handwritten sks" "a handwritten seven"

Prints one row per prompt (alpha at positions 0 .. L-1: <bos>, the words, <eos>, padding) and
the cosine between i* and the superordinate's encoding i_s.
"""

import sys

import jax.numpy as jnp
import numpy as np

from jgen.diffusion import perfusion as perf
from jgen.train import inference, run_record


def main(workdir: str, prompts: list[str]) -> None:
  config = run_record.latest_config(workdir)
  method, _, state = inference.restore_for_inference(config, workdir)
  ema = state.ema_params
  arrays = method.edit_arrays(ema, state.frozen)
  encoder = method.encoder_with_concept(ema)
  for prompt in prompts:
    tokens = jnp.asarray(method.tokenizer.encode([prompt]))
    context = method.encoder.encode(encoder, tokens, method.tokenizer.mask(tokens))
    alpha = perf.rank_one_similarity(context[0], arrays["i_star"], arrays["c_inv"])[:, 0]
    print(f"{prompt!r:24} alpha " + " ".join(f"{a:.2f}" for a in np.asarray(alpha)))
  i_star, i_super = np.asarray(arrays["i_star"][0]), np.asarray(arrays["i_super"][0])
  print("cos(i*, i_s) =", round(float(i_star @ i_super / np.linalg.norm(i_star)
                                      / np.linalg.norm(i_super)), 3))


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2:] or ["", "a handwritten sks", "a handwritten seven"])
