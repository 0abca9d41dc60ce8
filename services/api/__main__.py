import sys

from services.api.proc import main

sys.exit(main())
