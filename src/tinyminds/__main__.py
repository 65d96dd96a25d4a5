"""`python -m tinyminds` (what torchrun launches: torchrun ... -m tinyminds train ...)."""

import sys

from tinyminds.cli import main

sys.exit(main())
