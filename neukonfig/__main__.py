import sys

from neukonfig.cli import main

sys.exit(main())
