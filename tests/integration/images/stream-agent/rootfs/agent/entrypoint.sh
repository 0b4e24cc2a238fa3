#!/bin/sh
# stream-agent entrypoint: busybox httpd in the foreground, CGI under /www/cgi-bin.
PORT="${PORT:-8080}"
case "$PORT" in
    '' | *[!0-9]*) echo "stream-agent: invalid PORT '$PORT'" >&2; exit 2 ;;
esac
echo "stream-agent: replica=${REPLICA_INDEX-} listening on :$PORT"
httpd -f -p "$PORT" -h /www &
httpd_pid=$!
trap 'kill -TERM "$httpd_pid" 2>/dev/null; echo "stream-agent: stopping"; exit 0' TERM INT
wait "$httpd_pid"
