#!/bin/sh
# orc-git hook shim v1
#
# Written by `orc hooks install` (orc-git), which fills in the hook's name and the absolute path
# of the Python that installed it; `orc hooks uninstall` removes it and puts back the hook it
# replaced, which it keeps beside it as <hook>.orc-previous.  Re-installing rewrites this file:
# put your own commands in <hook>.orc-previous instead.
#
# In this order, it
#  1. runs <hook>.orc-previous, if there is one, with git's arguments and git's stdin (for
#     pre-push and post-rewrite, whose stdin carries data, a copy is kept so both parts read it);
#  2. runs orc's part, "$ORC_PYTHON" -c '...orc_git.githooks.run.main...' HOOK ARGS, same stdin;
#     skipped when ORC_HOOKS=0, when that Python or its orc_git package is gone, and for a pre-*
#     hook whose previous hook failed;
#  3. exits with the previous hook's status or, for a pre-* hook, orc's refusal.
# It relies on shell builtins, and on /usr/bin:/bin only for mktemp, cat and rm, so it works when
# a GUI client runs git with a bare or empty PATH.

hook=@ORC_HOOK@
orc_install_python=@ORC_PYTHON@
# The template run as it is (say, copied by hand): named after itself, python3 from PATH.
case $hook in @*) hook=${0##*/} ;; esac
case $orc_install_python in @*) orc_install_python=python3 ;; esac

case $0 in */*) orc_hooks_dir=${0%/*} ;; *) orc_hooks_dir=. ;; esac
orc_previous=$orc_hooks_dir/$hook.orc-previous
orc_tools=${PATH:+$PATH:}/usr/bin:/bin
orc_stdin=
orc_no_stdin=
orc_status=0

orc_cleanup() {
    if [ -n "$orc_stdin" ]; then PATH=$orc_tools rm -f "$orc_stdin"; fi
}
trap orc_cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -x "$orc_previous" ] && [ ! -d "$orc_previous" ]; then
    case $hook in
    pre-push | post-rewrite)
        orc_stdin=$(PATH=$orc_tools mktemp "${TMPDIR:-/tmp}/orc-hook-stdin.XXXXXX") &&
            PATH=$orc_tools cat >"$orc_stdin" || { orc_cleanup; orc_stdin=; orc_no_stdin=1; }
        ;;
    esac
    if [ -n "$orc_stdin" ]; then
        "$orc_previous" "$@" <"$orc_stdin"
    else
        "$orc_previous" "$@"
    fi
    orc_status=$?
fi

case $hook in pre-*) [ "$orc_status" -eq 0 ] || exit "$orc_status" ;; esac
[ "${ORC_HOOKS-}" != 0 ] || exit "$orc_status"
if [ -n "$orc_no_stdin" ]; then
    echo "orc: could not keep a copy of git's input to $hook; orc's $hook check skipped" >&2
    exit "$orc_status"
fi
ORC_PYTHON=${ORC_PYTHON:-$orc_install_python}
case $ORC_PYTHON in
*/*) [ -x "$ORC_PYTHON" ] && [ ! -d "$ORC_PYTHON" ] || exit "$orc_status" ;;
*) command -v "$ORC_PYTHON" >/dev/null 2>&1 || exit "$orc_status" ;;
esac

orc_code='import sys
if sys.path and sys.path[0] in ("", "."):
    del sys.path[0]  # never import orc_git from the repository git runs in
try:
    from orc_git.githooks.run import main
except ImportError:
    sys.exit(0)  # orc-git was uninstalled from this Python: do nothing
sys.exit(main(sys.argv[1:]))'

if [ -n "$orc_stdin" ]; then
    "$ORC_PYTHON" -c "$orc_code" "$hook" "$@" <"$orc_stdin"
else
    "$ORC_PYTHON" -c "$orc_code" "$hook" "$@"
fi
orc_part=$?
case $hook in pre-*) [ "$orc_part" -eq 0 ] || orc_status=$orc_part ;; esac
exit "$orc_status"
