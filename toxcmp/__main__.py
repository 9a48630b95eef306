"""`python -m toxcmp` runs the CLI."""

from toxcmp.cli.app import main

main()
