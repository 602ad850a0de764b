import sys

from nodescope_launcher import main

sys.exit(main())
