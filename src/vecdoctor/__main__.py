"""``python -m vecdoctor``: the command line."""

from vecdoctor.cli import main

main()
