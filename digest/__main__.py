"""Entry point for ``python -m digest``."""

from digest.cli import main

main()
