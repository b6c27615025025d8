"""Usage: python -m yamlcheck PROGRAM.yaml [STACK.yaml ...] [--stack NAME ...]

Run from tests/pulumi, or with it on PYTHONPATH. Stack files default to the Pulumi.*.yaml beside the
program; `--stack NAME` also checks the AWS name rules for a stack that has no file yet.
"""

import pathlib
import sys

from .program import check_program


def main(argv: list[str]) -> int:
    stack_names = []
    while "--stack" in argv:
        i = argv.index("--stack")
        if i + 1 >= len(argv):
            print(__doc__, file=sys.stderr)
            return 2
        stack_names.append(argv[i + 1])
        del argv[i:i + 2]
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    stacks = [pathlib.Path(a) for a in argv[1:]] or None
    diags = check_program(argv[0], stacks, stack_names)
    for d in diags:
        print(d)
    errors = sum(d.severity == "error" for d in diags)
    print(f"{errors} errors, {len(diags) - errors} warnings", file=sys.stderr)
    return 1 if errors else 0


sys.exit(main(sys.argv[1:]))
