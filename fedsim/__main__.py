"""``python -m fedsim``: the ``fedsim`` command line."""

from fedsim.cli import main

main()
