import sys

from pbt.cli import main

sys.exit(main())
