"""``python -m priorflow`` is the ``priorflow`` command line."""

from priorflow.cli import main

main()
