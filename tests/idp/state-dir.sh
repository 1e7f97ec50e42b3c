# shellcheck shell=bash
# The one argument of start.sh and selftest.sh (sourced, not run): the IdP's state directory,
# made if missing. Sets DIR to its absolute path; exits 2 with the usage otherwise.
if [ $# -ne 1 ]; then
  echo "usage: $0 STATE_DIR" >&2
  exit 2
fi
mkdir -p "$1"
DIR="$(cd "$1" && pwd)"
