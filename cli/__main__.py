"""``python -m cli`` is the ``priorflow`` command line."""

from cli import main

main()
