"""Pure functions over rows: scoring, metrics, diagnosis, divergence, arms, the verdict rule."""
