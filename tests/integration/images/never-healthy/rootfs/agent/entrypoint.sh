#!/bin/sh
PORT="${PORT:-8080}"
trap 'echo "never-healthy: stopping"; exit 0' TERM INT
case "${NEVER_HEALTHY_MODE:-silent}" in
    http500)
        echo "never-healthy: answering 500 on :$PORT"
        nc -ll -p "$PORT" -e /agent/handler500.sh &
        nc_pid=$!
        trap 'kill -TERM "$nc_pid" 2>/dev/null; exit 0' TERM INT
        wait "$nc_pid"
        exit $? ;;
    *)
        echo "never-healthy: up, but not listening on :$PORT"
        # `sleep & wait` so the TERM trap runs at once (PID 1, no default handlers).
        while :; do
            sleep 1 &
            wait $!
        done ;;
esac
