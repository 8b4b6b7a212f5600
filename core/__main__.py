"""``python -m core`` is the ``tally`` command."""

from core.cli import main

main()
