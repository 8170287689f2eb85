"""Array math shared below the families: parameter-tree paths (`trees`), image quality
(`image`), likelihoods (`likelihoods`) and the discrete diffusion forward process
(`schedules`). These modules import no other jgen module, so `jgen.nn`, `jgen.train` and every
family may use them."""
