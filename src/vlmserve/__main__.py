import sys

from vlmserve.cli import main

sys.exit(main())
