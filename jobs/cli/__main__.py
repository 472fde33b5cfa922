"""``python -m jobs.cli``: the same as the ``deepfakestream`` command."""

from jobs.cli import main

main()
