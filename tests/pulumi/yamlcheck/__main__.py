"""Usage: python -m yamlcheck PROGRAM.yaml [STACK.yaml ...]   (run from tests/pulumi, or with it on PYTHONPATH)"""

import pathlib
import sys

from .program import check_program


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    stacks = [pathlib.Path(a) for a in argv[1:]] or None
    diags = check_program(argv[0], stacks)
    for d in diags:
        print(d)
    errors = sum(d.severity == "error" for d in diags)
    print(f"{errors} errors, {len(diags) - errors} warnings", file=sys.stderr)
    return 1 if errors else 0


sys.exit(main(sys.argv[1:]))
