"""``python -m slth.cli`` runs the ``slth`` command line."""

from slth.cli import main

main()
