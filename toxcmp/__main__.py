"""`python -m toxcmp` runs the CLI."""

from .cli import main

main()
