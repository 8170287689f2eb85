"""`python -m jgen.convert SRC WORKDIR`: a published checkpoint as a jgen work directory.

  python -m jgen.convert ~/models/stable-diffusion-v1-5 /tmp/sd15
  python -m jgen.convert v2-1_768-ema-pruned.safetensors /tmp/sd21 --prediction=v
  python -m jgen.convert ~/models/ddpm-cifar10-32 /tmp/ddpm_cifar
  python -m jgen.convert ~/models/sd-controlnet-canny /tmp/sd15_canny --base=/tmp/sd15
  python -m jgen.convert ffhq.pkl /tmp/ffhq     # an NVlabs StyleGAN2-ADA pickle (never run)
  python -m jgen.convert facades_label2photo.pth /tmp/facades --arch=unet_256
  python -m jgen.convert checkpoints/horse2zebra/ /tmp/h2z    # latest_net_G_A.pth ... D_B

Prints the ``launch.py`` command that samples the result (`jgen.convert.pipeline`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from jgen import errors
from jgen.convert import controlnet_pipeline, pipeline, translation_pipeline


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m jgen.convert", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("src", help="a diffusers folder, a single .ckpt/.safetensors file, "
                      "an NVlabs StyleGAN2-ADA .pkl, or a pix2pix/CycleGAN .pth or "
                      "checkpoint folder")
  parser.add_argument("workdir", help="the jgen work directory to write (new)")
  parser.add_argument("--prediction", choices=sorted(pipeline.PREDICTIONS.values()),
                      help="what the U-Net predicts (single files cannot tell; SD 2.x 768: v)")
  parser.add_argument("--ema", action="store_true",
                      help="single files: convert the model_ema weights")
  parser.add_argument("--variant", help="diffusers weight variant to prefer, e.g. fp16")
  parser.add_argument("--config", help="experiment config file to start from")
  parser.add_argument("--base", help="a converted Stable Diffusion work directory: SRC is then "
                      "a diffusers ControlNetModel folder for it (diffusion.sd_controlnet)")
  parser.add_argument("--overrides", help="single files: JSON {part: {diffusers config}} for "
                      "what shapes cannot tell, e.g. '{\"unet\": {\"attention_head_dim\": 8}}'")
  pth = parser.add_argument_group("pix2pix / CycleGAN .pth (the reference's flags; the file's "
                                  "shapes tell the rest, and a flag that contradicts them "
                                  "is an error)")
  pth.add_argument("--arch", choices=sorted(translation_pipeline.tr.ARCHS),
                   help="--netG / --netD of the network")
  pth.add_argument("--norm", choices=("batch", "instance"))
  for flag in ("ngf", "ndf", "input_nc", "output_nc", "n_layers_D", "image_size"):
    pth.add_argument(f"--{flag}", type=int)
  pth.add_argument("--no_dropout", action="store_true", help="a U-Net trained without dropout")
  parser.add_argument("--verbose", action="store_true", help=errors.VERBOSE_HELP)
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  try:
    if args.arch or translation_pipeline.is_translation_source(args.src):
      result = translation_pipeline.convert_translation(
          args.src, args.workdir, arch=args.arch, norm=args.norm, ngf=args.ngf, ndf=args.ndf,
          input_nc=args.input_nc, output_nc=args.output_nc, n_layers_d=args.n_layers_D,
          dropout=0.0 if args.no_dropout else None, image_size=args.image_size,
          config_file=args.config)
    elif args.base:
      result = controlnet_pipeline.convert_controlnet(
          args.src, args.base, args.workdir, weights_variant=args.variant,
          config_file=args.config)
    else:
      result = pipeline.convert(args.src, args.workdir, prediction=args.prediction,
                                ema=args.ema, weights_variant=args.variant,
                                config_file=args.config,
                                overrides=json.loads(args.overrides) if args.overrides else None)
  except (errors.JgenError, ValueError, FileNotFoundError, FileExistsError) as e:
    return errors.report(e, parser.prog, verbose=args.verbose or None)
  command = " ".join(["python launch.py", f"--config {result['config']}",
                      f"--workdir {args.workdir}", "--mode=sample", *result["overrides"]])
  print(f"converted {args.src} ({result['format']}) -> {args.workdir} ({result['method']})\n"
        f"sample it with:\n  {command}")
  if result.get("initialized"):
    print(f"converted {result['converted']}; not in the source, initialized at seed 0: "
          f"{result['initialized']}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
