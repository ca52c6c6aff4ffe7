#!/bin/sh
# carweb's container entrypoint.
#   (no argument), web [gunicorn flags...]  indexes, admin, then gunicorn on $CARWEB_HOST:$CARWEB_PORT
#   bridge                                  the MQTT bridge as its own process (web runs CARWEB_BRIDGE=external)
#   anything else                           run as is, e.g. `flask --app carweb create-user ...`
set -eu

cd "$(dirname "$0")/.."
export CARWEB_HOST="${CARWEB_HOST:-0.0.0.0}"
export CARWEB_PORT="${CARWEB_PORT:-8000}"

run_web() {
    # nginx serves /static/ from a volume it shares with web: refresh it from this image.
    if [ -n "${CARWEB_STATIC_EXPORT:-}" ]; then
        cp -R static/. "$CARWEB_STATIC_EXPORT/"
    fi
    flask --app carweb init-db
    flask --app carweb ensure-admin
    exec gunicorn -c deploy/gunicorn.conf.py wsgi:app "$@"
}

case "${1:-web}" in
    web)
        [ "$#" -eq 0 ] || shift
        run_web "$@"
        ;;
    -*)
        run_web "$@"
        ;;
    bridge)
        shift
        exec python -m carweb.bridge "$@"
        ;;
    *)
        exec "$@"
        ;;
esac
