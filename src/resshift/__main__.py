"""`python -m resshift` runs the command-line interface (also under torchrun)."""

import sys

from .cli import main

sys.exit(main())
