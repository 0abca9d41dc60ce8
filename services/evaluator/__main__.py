import sys

from services.evaluator.proc import main

sys.exit(main())
