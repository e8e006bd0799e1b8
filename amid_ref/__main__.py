import sys

from amid_ref.cli import main

sys.exit(main())
