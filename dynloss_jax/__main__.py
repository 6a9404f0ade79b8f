import sys

from dynloss_jax.cli import main

sys.exit(main())
