"""Benchmarks that print ratios against a baseline measured in the same run; gpu_check; verify-setup.

One module per `toxcmp bench X` command: api, local, serve, engines, busy (and `CpuHog`), sides, arms, report, html;
result.py holds what their result dataclasses share. setup_check backs `toxcmp verify-setup`."""
