#!/bin/sh
# http-agent entrypoint.
#
# Why not `httpd -f -p $PORT -h /www`: Debian's busybox-static (1.35) httpd
# only runs CGI for URLs under /cgi-bin/ (or for files with an interpreter
# suffix like *.cgi), and is built without the "P:" reverse-proxy feature, so
# it cannot serve a CGI at exactly /health or /invoke.  Instead `nc -ll -e`
# (persistent listener, one forked handler per connection) runs handler.sh,
# which speaks just enough HTTP/1.0 for the tests.
PORT="${PORT:-8080}"
case "$PORT" in
    '' | *[!0-9]*) echo "http-agent: invalid PORT '$PORT'" >&2; exit 2 ;;
esac

if [ "${STARTUP_DELAY:-0}" != 0 ]; then
    echo "http-agent: waiting ${STARTUP_DELAY}s before listening"
    sleep "$STARTUP_DELAY"
fi

echo "http-agent: replica=${REPLICA_INDEX-} listening on :$PORT (pid $$)"
nc -ll -p "$PORT" -e /agent/handler.sh &
nc_pid=$!
# PID 1 gets no default signal handlers: forward TERM/INT so `docker stop`
# is immediate instead of waiting for the SIGKILL timeout.
trap 'kill -TERM "$nc_pid" 2>/dev/null; echo "http-agent: stopping"; exit 0' TERM INT
wait "$nc_pid"
rc=$?
echo "http-agent: listener exited with status $rc" >&2
exit "$rc"
