"""`python -m oxgate` is the `oxgate` command."""
from oxgate import main

main()
