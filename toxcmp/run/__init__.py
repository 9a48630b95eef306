"""A comparison run: backend specs and arms, the cache in front of the backends, orchestration (every arm against
the reference), provenance, rescore and replay. Imports domain, backends, analysis, results and report; nothing
imports it but the CLI, the benchmarks and the public API."""
