"""`python -m transferdepth ...` (also what `torchrun -m transferdepth train ...` runs)."""

import sys

from transferdepth.cli import main

sys.exit(main())
