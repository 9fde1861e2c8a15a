#!/usr/bin/env bash
# Shell helpers shared by e2e/cluster.sh and e2e/sources.sh. Sourced, not executed.
# The sourcing script sets LOG_TAG, LOGS and PIDS first.

log() { printf '[%s] %s\n' "$LOG_TAG" "$*" >&2; }
die() {
  printf '[%s] ERROR: %s\n' "$LOG_TAG" "$*" >&2
  exit 1
}

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# --- packages ---------------------------------------------------------------------------

APT_UPDATED=0
apt_update_once() {
  if [[ $APT_UPDATED -eq 0 ]]; then
    log "apt-get update"
    as_root apt-get update -qq >/dev/null || die "apt-get update failed"
    APT_UPDATED=1
  fi
}

# ensure_pkg COMMAND PACKAGE: install PACKAGE from Debian when COMMAND is missing.
# apt_install PKG...: install from Debian's packages without starting their services: a
# policy-rc.d that says no is in place while apt runs (unless one is there already). The
# servers this project starts listen on loopback; a package's default service may not
# (RabbitMQ's listens on every interface).
apt_install() {
  local policy=/usr/sbin/policy-rc.d made=0 rc=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null && as_root chmod 755 "$policy" && made=1
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null || rc=$?
  if [[ $made -eq 1 ]]; then as_root rm -f "$policy"; fi
  return $rc
}

ensure_pkg() {
  local cmd=$1 pkg=$2
  if ! command -v "$cmd" >/dev/null 2>&1 && [[ ! -x "$cmd" ]]; then
    apt_update_once
    log "installing $pkg (for $cmd)"
    apt_install "$pkg" || die "apt-get install $pkg failed"
  fi
}

# install_file PATH MODE CONTENT: PATH holds CONTENT (and a newline), replaced atomically
# (written aside, then renamed over) and only when it differs, so that a reader or an exec
# of PATH never sees it half written.
install_file() {
  local path=$1 mode=$2 content=$3
  [[ -f $path && $(cat "$path") == "$content" ]] && return 0
  printf '%s\n' "$content" >"$path.tmp.$$"
  chmod "$mode" "$path.tmp.$$"
  mv -f "$path.tmp.$$" "$path"
}

# --- processes ---------------------------------------------------------------------------

# running NAME: true when the process recorded in NAME's PID file is alive and is ours.
running() {
  local pidfile=$PIDS/$1.pid pid
  [[ -s $pidfile ]] || return 1
  pid=$(cat "$pidfile")
  kill -0 "$pid" 2>/dev/null || return 1
  # Captured, not piped into `grep -q`: under pipefail tr's SIGPIPE would read as "not ours".
  [[ $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) == *"$(cat "$PIDS/$1.cmd" 2>/dev/null || echo "$1")"* ]]
}

# start_bg NAME BINARY ARGS...: start in the background with its log in $LOGS/NAME.log.
start_bg() {
  local name=$1
  shift
  mkdir -p "$LOGS" "$PIDS"
  log "starting $name (log: $LOGS/$name.log)"
  # The server inherits no descriptor but its standard streams: a caller's lock (sources.sh
  # holds one around `up`; a test run may sit under flock(1)) would otherwise stay held
  # for the life of the server, and a caller's pipe would never see its end.
  (
    for fd in /proc/self/fd/*; do
      fd=${fd##*/}
      if ((fd > 2)); then eval "exec $fd>&-"; fi
    done 2>/dev/null
    exec nohup "$@" >>"$LOGS/$name.log" 2>&1 </dev/null
  ) &
  echo $! >"$PIDS/$name.pid"
  basename "$1" >"$PIDS/$name.cmd"
  args_sum "$@" >"$PIDS/$name.args"
}

# args_sum ARGS...: a digest of a command line and of $ARGS_SALT (the caller sets it to a
# digest of the configuration files the command reads, so that a change to those restarts
# it too).
args_sum() { printf '%s\0' "$@" "${ARGS_SALT:-}" | sha256sum | cut -d' ' -f1; }

# same_args NAME BINARY ARGS...: NAME is running, started with exactly this command line
# and configuration (so that `up` restarts a component whose flags or files changed, and
# leaves the others alone).
same_args() {
  local name=$1
  shift
  running "$name" && [[ $(cat "$PIDS/$name.args" 2>/dev/null) == "$(args_sum "$@")" ]]
}

# start_unless_same NAME PORT BINARY ARGS...: leave NAME alone when it runs with exactly this
# command line and configuration ($ARGS_SALT); else stop it and start it so, after checking
# that its loopback PORT is free (no check when PORT is empty).
start_unless_same() {
  local name=$1 port=$2
  shift 2
  same_args "$name" "$@" && return 0
  stop_one "$name"
  [[ -z $port ]] || port_free "$port" ||
    die "port $port ($name) is taken by a process this script did not start"
  start_bg "$name" "$@"
}

stop_one() {
  local name=$1 pidfile=$PIDS/$1.pid pid i
  if running "$name"; then
    pid=$(cat "$pidfile")
    log "stopping $name (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile" "$PIDS/$name.cmd" "$PIDS/$name.args"
}

# port_free PORT: nothing listens on 127.0.0.1:PORT.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_for NAME SECONDS COMMAND...: poll COMMAND until it succeeds or fail naming NAME.
wait_for() {
  local name=$1 secs=$2 i
  shift 2
  for ((i = 0; i < secs * 5; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    # The pid, not `running`: until the child has exec'd its binary its command line is
    # still the shell's, which `running` reads as "not ours" (seen on a loaded machine).
    if [[ -s $PIDS/$name.pid ]] && ! kill -0 "$(cat "$PIDS/$name.pid")" 2>/dev/null; then
      die "$name exited during start-up; read $LOGS/$name.log"
    fi
    sleep 0.2
  done
  die "$name did not come up within ${secs}s; read $LOGS/$name.log"
}

# ensure_venv VENV PIP_SPEC CHECK...: a virtualenv at VENV with PIP_SPEC installed, made
# (under a lock, so concurrent callers install it once) unless the command CHECK succeeds.
ensure_venv() {
  local venv=$1 spec=$2
  shift 2
  "$@" >/dev/null 2>&1 && return 0
  mkdir -p "$(dirname "$venv")"
  exec 8>"$venv.lock"
  flock -w 600 8 || die "another process has been installing $venv for 10 minutes"
  if ! "$@" >/dev/null 2>&1; then
    log "installing $spec into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv" >&2 || die "python3 -m venv $venv failed"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$spec" >&2 ||
      die "pip install $spec failed"
    "$@" >/dev/null 2>&1 || die "'$*' fails after pip install $spec"
  fi
  exec 8>&-
}
