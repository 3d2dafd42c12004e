"""`python -m gdm_engine.cli`, as torchrun starts it."""

import sys

from gdm_engine.cli import main

sys.exit(main())
