#!/bin/bash
# StreamSpace session desktop: Xvnc (TigerVNC) serving RFB on $VNC_PORT plus a desktop session.
#
# Environment (injected by the agent into the session pod; all optional):
#   VNC_PORT         RFB port, on the loopback interface only   (default 5900)
#   VNC_GEOMETRY     screen size WIDTHxHEIGHT                   (default 1280x800)
#   VNC_DEPTH        colour depth 16|24|32                      (default 24)
#   VNC_PASSWORD     VNC password; empty = no VNC auth (the agent tunnel is the only way in)
#   VNC_DISPLAY      X display number                           (default 1)
#   DESKTOP_COMMAND  shell command started on the display       (default startxfce4)
#   HOME             home directory, on the session's volume    (default /home/streamspace)
#
# Runs as any non-root uid; writes only to $HOME and /tmp. Exits when Xvnc or the desktop exits
# (the session is over) and forwards SIGTERM/SIGINT to both.
#
# VNC listens on localhost only (127.0.0.1 and ::1): nothing outside the pod reaches it, whatever Service
# or network policy exists. The agent's tunnel gets in through the API server's port-forward, which
# connects from inside the pod's network namespace.
set -eu

VNC_PORT="${VNC_PORT:-5900}"
VNC_GEOMETRY="${VNC_GEOMETRY:-1280x800}"
VNC_DEPTH="${VNC_DEPTH:-24}"
VNC_DISPLAY="${VNC_DISPLAY:-1}"
DESKTOP_COMMAND="${DESKTOP_COMMAND:-startxfce4}"
HOME="${HOME:-/home/streamspace}"
export HOME

log() { printf '%s streamspace-session: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }

case "$VNC_PORT" in ''|*[!0-9]*) log "VNC_PORT must be a port number, got '$VNC_PORT'"; exit 2 ;; esac
case "$VNC_DISPLAY" in ''|*[!0-9]*) log "VNC_DISPLAY must be a display number, got '$VNC_DISPLAY'"; exit 2 ;; esac
case "$VNC_GEOMETRY" in *[!0-9x]*|x*|*x|'') log "VNC_GEOMETRY must be WIDTHxHEIGHT, got '$VNC_GEOMETRY'"; exit 2 ;; esac
case "$VNC_DEPTH" in 16|24|32) ;; *) log "VNC_DEPTH must be 16, 24 or 32, got '$VNC_DEPTH'"; exit 2 ;; esac

# A fresh volume belongs to root: the pod's fsGroup makes the kubelet give it to the desktop's group.
if [ ! -w "$HOME" ]; then
  log "HOME $HOME is not writable by uid $(id -u) gid $(id -g) (it is $(stat -c '%U:%G, mode %a' "$HOME")): set the session pod's securityContext.fsGroup to $(id -g)"
  exit 2
fi
mkdir -p "$HOME/.vnc"
chmod 700 "$HOME/.vnc"

# The password file lives in the session's own runtime dir (not on the persistent home) and the
# password itself is removed from the environment before the desktop starts.
RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/streamspace-$(id -u)}"
mkdir -p "$RUNTIME_DIR"
chmod 700 "$RUNTIME_DIR"
if [ -n "${VNC_PASSWORD:-}" ]; then
  printf '%s\n' "$VNC_PASSWORD" | vncpasswd -f > "$RUNTIME_DIR/vncpasswd"
  chmod 600 "$RUNTIME_DIR/vncpasswd"
  set -- -SecurityTypes VncAuth -PasswordFile "$RUNTIME_DIR/vncpasswd"
else
  set -- -SecurityTypes None
fi
unset VNC_PASSWORD

# A stale lock from a previous run on the same /tmp would stop Xvnc from starting.
rm -f "/tmp/.X${VNC_DISPLAY}-lock" "/tmp/.X11-unix/X${VNC_DISPLAY}" 2>/dev/null || true

log "starting Xvnc :$VNC_DISPLAY on localhost port $VNC_PORT ($VNC_GEOMETRY x$VNC_DEPTH)"
Xvnc ":$VNC_DISPLAY" \
  -rfbport "$VNC_PORT" \
  -geometry "$VNC_GEOMETRY" \
  -depth "$VNC_DEPTH" \
  -desktop StreamSpace \
  -AlwaysShared \
  -localhost \
  -nolisten tcp \
  "$@" &
xvnc_pid=$!
desktop_pid=""

stop() {
  trap - TERM INT
  code="${1:-0}"
  log "stopping"
  [ -n "$desktop_pid" ] && kill -TERM "$desktop_pid" 2>/dev/null || true
  kill -TERM "$xvnc_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  exit "$code"
}
trap 'stop 0' TERM INT

# Wait (bounded) for the X display socket before starting the desktop.
i=0
while [ ! -S "/tmp/.X11-unix/X${VNC_DISPLAY}" ]; do
  if ! kill -0 "$xvnc_pid" 2>/dev/null; then
    wait "$xvnc_pid" || true
    log "Xvnc exited during start"
    exit 1
  fi
  i=$((i + 1))
  if [ "$i" -gt 300 ]; then log "Xvnc did not open display :$VNC_DISPLAY within 30s"; stop 1; fi
  sleep 0.1
done

export DISPLAY=":$VNC_DISPLAY"
cd "$HOME"
log "starting desktop: $DESKTOP_COMMAND"
sh -c "$DESKTOP_COMMAND" &
desktop_pid=$!

# Whichever ends first ends the session (a trapped signal also returns from wait).
wait -n "$xvnc_pid" "$desktop_pid" || true
if kill -0 "$xvnc_pid" 2>/dev/null; then log "desktop exited"; stop 0; fi
log "Xvnc exited"
stop 1
