import sys

from fedranklite.cli.main import main

sys.exit(main())
