"""``python -m executor``: the same as the ``consul-mesos-executor`` console script."""

import sys

from executor.cli import main

sys.exit(main())
