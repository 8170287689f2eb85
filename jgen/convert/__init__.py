"""Published checkpoints in and out: readers per format that map onto jgen's modules."""
