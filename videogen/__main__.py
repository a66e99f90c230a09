"""`python -m videogen`: the same as the `videogen` command."""

import sys

from .cli import main

sys.exit(main())
