# The flake's `formatter` (nix/default.nix wraps this in writeShellApplication, nixpkgs-fmt on PATH).
#
# Since Nix 2.25 (NixOS/nix#11438) `nix fmt` without arguments runs the formatter without any, and
# nixpkgs-fmt without a path formats standard input: `nix fmt` would wait on the terminal instead
# of formatting. So when no path is given (no arguments, or only flags such as --check), format the
# whole flake: PRJ_ROOT, which Nix >= 2.30 sets to the flake's directory (so it also works from a
# subdirectory), else the current directory. nixpkgs-fmt walks a directory for *.nix files itself,
# skipping hidden entries (.git) and, inside a git work tree, git-ignored ones (/target, /result),
# and never follows symlinks. Paths given are passed through unchanged: `nix fmt -- nix/rust.nix`.
has_path=false
for arg in "$@"; do
  case $arg in
    -*) ;;
    *) has_path=true ;;
  esac
done
if [ "$has_path" = false ]; then
  set -- "$@" "${PRJ_ROOT:-.}"
fi
exec nixpkgs-fmt "$@"
