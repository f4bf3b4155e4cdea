"""The entry points: the code location (`definitions.py`), the CLI, the demo, `supportflow dev`.

supportflow uses some of Dagster's beta and preview parameters on purpose (`backfill_policy`,
`owners` on sensors, ...). Their warnings say nothing an operator can act on, so every process
that starts here (the code server, the daemon, the CLI) silences them before any definition
is built. They are matched by message, not by class, so that a quick command such as
`supportflow db url` does not import Dagster just to silence it.
"""

import warnings

warnings.filterwarnings("ignore", message=r".* is currently in (beta|preview)")
