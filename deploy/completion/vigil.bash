# bash completion for vigil. Install: cp vigil.bash /etc/bash_completion.d/vigil
# (or `source` it). Completes subcommands, each subcommand's flags, and the values of
# --by, --sort and --syscall-mode.
_vigil() {
  local cur prev cmd
  cur="${COMP_WORDS[COMP_CWORD]}"
  prev="${COMP_WORDS[COMP_CWORD-1]}"
  cmd="${COMP_WORDS[1]}"
  local commands="top snapshot trace hist agents alerts query version help"
  if [[ ${COMP_CWORD} -eq 1 ]]; then
    COMPREPLY=($(compgen -W "${commands} --help --version" -- "${cur}"))
    return
  fi
  case "${prev}" in
    --by) COMPREPLY=($(compgen -W "process container" -- "${cur}")); return ;;
    --sort) COMPREPLY=($(compgen -W "cpu syscalls errors net block runq pid" -- "${cur}")); return ;;
    --syscall-mode) COMPREPLY=($(compgen -W "continuous sampled off" -- "${cur}")); return ;;
    --duration|--interval|--since|--step|--pid|--limit|--comm|--container|--aggregator|--state|--disable|--token|--ring-kb|--device)
      return ;;
  esac
  local flags=""
  case "${cmd}" in
    top) flags="--by --sort --pid --container --comm --interval --limit --syscall-mode --once --json --verbose" ;;
    snapshot) flags="--duration --json --pretty --syscall-mode --pid --comm --disable --verbose" ;;
    trace)
      if [[ ${COMP_CWORD} -eq 2 && "${cur}" != -* ]]; then
        COMPREPLY=($(compgen -W "exec exit tcp oom signal" -- "${cur}")); return
      fi
      flags="--pid --comm --container --duration --json --ring-kb --verbose" ;;
    hist)
      if [[ ${COMP_CWORD} -eq 2 && "${cur}" != -* ]]; then
        COMPREPLY=($(compgen -W "runq syscall block tcp-connect tcp-rtt" -- "${cur}")); return
      fi
      flags="--pid --container --device --duration --interval --json --verbose" ;;
    agents) flags="--aggregator --json --token" ;;
    alerts) flags="--aggregator --json --token --state" ;;
    query) flags="--aggregator --json --token --since --step" ;;
    help) COMPREPLY=($(compgen -W "${commands}" -- "${cur}")); return ;;
  esac
  COMPREPLY=($(compgen -W "${flags} --help" -- "${cur}"))
}
complete -F _vigil vigil
