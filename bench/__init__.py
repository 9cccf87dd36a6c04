"""How fast and how much memory: cases, sweeps, timing, training step, records, environment, selection of
models, runtimes and modes, and build grids."""
