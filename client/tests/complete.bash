#!/usr/bin/env bash
# complete.bash SCRIPT LINE: prints, one a line, what bash completion offers for LINE (its last
# word, or a new word after a trailing space), calling the function that SCRIPT registered
# with `complete -F` the way readline does. SCRIPT "-" loads pib-client's completion the way
# an interactive shell does, through bash-completion's loader from the installed directories.
# Used by client/tests/completions.rs and tests/packages.rs.
set -uo pipefail
script=$1 line=$2
if [[ $script == - ]]; then
    # shellcheck source=/dev/null # the system's, not ours
    source /usr/share/bash-completion/bash_completion || exit 1
    __load_completion pib-client || { echo "bash-completion found no completion for pib-client" >&2; exit 1; }
else
    # shellcheck source=/dev/null # a generated script
    source "$script" || exit 1
fi
read -ra COMP_WORDS <<<"$line"
[[ $line == *' ' ]] && COMP_WORDS+=("")
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
COMP_LINE=$line
COMP_POINT=${#line}
spec=$(complete -p pib-client) || exit 1
fn=${spec#*-F }
fn=${fn%% *}
"$fn" pib-client "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
printf '%s\n' "${COMPREPLY[@]}"
