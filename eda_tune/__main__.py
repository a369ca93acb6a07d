import sys

from eda_tune.cli import main

sys.exit(main())
