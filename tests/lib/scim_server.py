"""Start scim2-server with its bearer token read from a file.

`tests/scim.sh` runs this instead of the `scim2-server` command so that the token
is not on the command line, where `ps` shows it to every user of the machine.

    python3 scim_server.py TOKEN_FILE [scim2-server options...]
"""

import sys
from pathlib import Path

from scim2_server.testserver.cli import main

if __name__ == "__main__":
    token_file, *options = sys.argv[1:]
    token = Path(token_file).read_text().strip()
    sys.argv = ["scim2-server", *options, "--bearer-token", token]
    sys.exit(main())
