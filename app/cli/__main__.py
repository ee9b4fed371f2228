"""`python -m app.cli`: the `nurture` command without its console script."""

from app.cli import main

main()
