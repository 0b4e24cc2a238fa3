#!/bin/sh
# Handles ONE HTTP request: stdin/stdout are the client socket (nc -e),
# stderr is the container's stderr (request log).
READ_TIMEOUT=10
CR="$(printf '\r')"

read_line() {
    IFS= read -r -t "$READ_TIMEOUT" line || return 1
    line="${line%"$CR"}"
}

# JSON string literal for $1.
json_str() {
    printf '%s' "$1" | awk '
        BEGIN { ORS = ""; printf "\"" }
        {
            gsub(/\\/, "\\\\"); gsub(/"/, "\\\""); gsub(/\t/, "\\t"); gsub(/\r/, "\\r")
            if (NR > 1) printf "\\n"
            printf "%s", $0
        }
        END { printf "\"" }'
}

# respond STATUS REASON CONTENT_TYPE BODY
respond() {
    len=$(printf '%s' "$4" | wc -c)
    printf 'HTTP/1.0 %s %s\r\nContent-Type: %s\r\nContent-Length: %s\r\nConnection: close\r\n\r\n' \
        "$1" "$2" "$3" "$len"
    [ "$method" = HEAD ] || printf '%s' "$4"
    echo "http-agent: $method $target -> $1" >&2
    exit 0
}

method=- target=-
read_line || exit 0
set -- $line
method="${1:--}" target="${2:--}"
path="${target%%\?*}"

clen=0 expect=
while read_line && [ -n "$line" ]; do
    case "$line" in
        [Cc][Oo][Nn][Tt][Ee][Nn][Tt]-[Ll][Ee][Nn][Gg][Tt][Hh]:*)
            clen="${line#*:}"; clen="${clen//[!0-9]/}"; clen="${clen:-0}" ;;
        [Ee][Xx][Pp][Ee][Cc][Tt]:*100-[Cc][Oo][Nn][Tt][Ii][Nn][Uu][Ee]*)
            expect=1 ;;
    esac
done

body=
if [ "$clen" -gt 0 ]; then
    [ -n "$expect" ] && printf 'HTTP/1.1 100 Continue\r\n\r\n'
    body="$(head -c "$clen")"
fi

case "$path" in
    /)
        [ "$method" = GET ] || [ "$method" = HEAD ] || respond 405 "Method Not Allowed" text/plain "method not allowed
"
        respond 200 OK text/plain "deploy-test http-agent replica=${REPLICA_INDEX-}
" ;;
    /health | /cgi-bin/health)
        [ "$method" = GET ] || [ "$method" = HEAD ] || respond 405 "Method Not Allowed" application/json '{"error": "method not allowed"}'
        respond 200 OK application/json '{"status": "ok"}' ;;
    /invoke | /cgi-bin/invoke)
        [ "$method" = POST ] || respond 405 "Method Not Allowed" application/json '{"error": "method not allowed"}'
        # A body asking for {"sleep": N} (N whole seconds, at most 30) answers only after N seconds.
        case "$body" in
            *'"sleep":'*)
                pause="${body#*\"sleep\":}"; pause="${pause#"${pause%%[![:space:]]*}"}"; pause="${pause%%[!0-9]*}"
                [ -n "$pause" ] && [ "$pause" -le 30 ] && sleep "$pause" ;;
        esac
        # Embed the body verbatim when it looks like JSON, else as a string.
        trimmed="${body#"${body%%[![:space:]]*}"}"
        case "$trimmed" in
            '') echo_json=null ;;
            [\{\[\"0-9-]* | true* | false* | null*) echo_json="$body" ;;
            *) echo_json="$(json_str "$body")" ;;
        esac
        respond 200 OK application/json "{\"replica\": $(json_str "${REPLICA_INDEX-}"), \"version\": $(json_str "${AGENT_VERSION:-1}"), \"echo\": $echo_json}" ;;
    *)
        respond 404 "Not Found" application/json '{"error": "not found"}' ;;
esac
