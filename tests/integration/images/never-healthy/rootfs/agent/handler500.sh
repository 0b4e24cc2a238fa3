#!/bin/sh
# One request on stdin/stdout (nc -e): drain the request head, answer 500.
CR="$(printf '\r')"
while IFS= read -r -t 10 line && [ -n "${line%"$CR"}" ]; do :; done
body='{"error": "never healthy"}'
printf 'HTTP/1.0 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' \
    "${#body}" "$body"
