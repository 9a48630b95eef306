"""Benchmarks that print ratios against a baseline measured in the same run; gpu_check; verify-setup."""
