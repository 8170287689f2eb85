"""Command lines that drive trained runs: restore a work directory, sample it, score it.

  python -m jgen.cli.control          # ControlNet agreement (`jgen.metrics.control`)
  python -m jgen.cli.personalization  # DreamBooth / textual inversion / IP-Adapter / Imagic

The scores themselves are pure functions in `jgen.metrics`; these modules only restore and
sample the runs (`jgen.train.inference`) and print the tables.
"""
