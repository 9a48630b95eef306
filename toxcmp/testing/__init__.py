"""A scripted OpenAI-compatible loopback server, shared by the tests and the benchmarks."""
