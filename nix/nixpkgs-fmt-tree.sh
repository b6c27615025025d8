# The flake's `formatter` (nix/default.nix wraps this in writeShellApplication, nixpkgs-fmt on PATH).
#
# Since Nix 2.25 (NixOS/nix#11438) `nix fmt` without arguments runs the formatter without any, and
# nixpkgs-fmt without a path formats standard input: `nix fmt` would wait on the terminal instead
# of formatting. So with no arguments, or only --check, format (or check) the whole flake: PRJ_ROOT, which Nix >= 2.30 sets to the flake's directory (so it also works from a
# subdirectory), else the current directory. nixpkgs-fmt walks a directory for *.nix files itself,
# skipping hidden entries (.git) and, inside a git work tree, git-ignored ones (/target, /result),
# and never follows symlinks. Anything else is passed through unchanged: `nix fmt -- nix/rust.nix`,
# `nix fmt -- --explain < file.nix` (an option's value is never mistaken for a path).
if [ "$#" -eq 0 ] || { [ "$#" -eq 1 ] && [ "$1" = --check ]; }; then
  set -- "$@" "${PRJ_ROOT:-.}"
fi
exec nixpkgs-fmt "$@"
