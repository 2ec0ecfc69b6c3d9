"""`python -m app COMMAND ...`: the same as the `vjepa` console script (torchrun -m app pretrain ...)."""
import sys

from app.cli import main

sys.exit(main())
