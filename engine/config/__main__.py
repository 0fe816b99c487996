"""``python -m engine.config --shell``: the defaults the bash scripts use, as bash
assignments."""
import sys

from engine.config import shell_defaults

if sys.argv[1:] != ["--shell"]:
    sys.exit("usage: python -m engine.config --shell")
sys.stdout.write(shell_defaults())
