"""``python -m slth`` runs the ``slth`` command line."""

from slth.cli import main

main()
