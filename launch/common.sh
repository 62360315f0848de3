# shellcheck shell=bash
# Sourced by the launch scripts: `run` runs a command, or under --dry-run prints it as one shell line instead.
# A script sets DRY_RUN=1 when its first argument is --dry-run.
DRY_RUN=""

# quote WORD...: the words on one line as a shell reads them back: single-quoted where a shell would split or expand
# them (only the value of a NAME=value or --flag=value word, so it reads as one).
quote() {
  local word quoted=()
  for word; do
    if [[ $word =~ ^[[:alnum:]_./:=,@%+-]+$ ]]; then
      quoted+=("$word")
    elif [[ $word =~ ^(-*[[:alnum:]_.-]+=)(.*)$ ]]; then
      quoted+=("${BASH_REMATCH[1]}'${BASH_REMATCH[2]//\'/\'\\\'\'}'")
    else
      quoted+=("'${word//\'/\'\\\'\'}'")
    fi
  done
  echo "${quoted[*]}"
}

# run CMD...: runs CMD; under --dry-run prints it (stdout, one line) and runs nothing.
run() {
  if [[ -n $DRY_RUN ]]; then
    quote "$@"
  else
    "$@"
  fi
}
