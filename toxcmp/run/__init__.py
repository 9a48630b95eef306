"""A comparison run: specs and arms, the cache in front of backends, orchestration, provenance, rescore."""
