"""Layer 3: files: the Hub (save/load priors), checkpoints either side of ``wrap``,
state-dict splitting, atomic writes, image I/O."""
