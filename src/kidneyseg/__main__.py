"""`python -m kidneyseg` (also what `torchrun -m kidneyseg` runs)."""

from kidneyseg.cli import main

main()
