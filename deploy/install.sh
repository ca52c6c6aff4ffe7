#!/bin/sh
# Install a carweb release (from deploy/package.sh) into PREFIX, on a server or in any
# local directory:
#   PREFIX/releases/NAME/        the release's files and its own virtual environment (.venv)
#   PREFIX/current -> releases/NAME   switched atomically once the release is ready
#
#   deploy/install.sh RELEASE.tar.gz PREFIX [--restart]
#
# Settings come from the environment, and from CARWEB_ENV_FILE (default
# /etc/carweb/carweb.env) when it exists: the release's `flask --app carweb init-db`
# (indexes, data upgrades) needs MONGODB_URI and SECRET_KEY. --restart then restarts the
# running carweb-web@PORT units one at a time (each healthy before the next) and the
# carweb-bridge@NAME units. The five newest releases are kept.
set -eu

[ "$#" -ge 2 ] || { echo "usage: install.sh RELEASE.tar.gz PREFIX [--restart]" >&2; exit 2; }
tarball=$1
prefix=$2
restart=${3:-}
name=$(basename "$tarball" .tar.gz)
release="$prefix/releases/$name"
env_file=${CARWEB_ENV_FILE:-/etc/carweb/carweb.env}

if [ -e "$release" ]; then
    echo "install.sh: $release exists; build a new version (or remove it if it is not current)" >&2
    exit 1
fi
mkdir -p "$release"
tar -xzf "$tarball" -C "$release"
"${PYTHON:-python3.11}" -m venv "$release/.venv"
"$release/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$release/requirements.txt"

if [ -f "$env_file" ]; then
    set -a
    # shellcheck disable=SC1090
    . "$env_file"
    set +a
fi
(cd "$release" && .venv/bin/flask --app carweb init-db)

ln -sfn "releases/$name" "$prefix/current.new"
mv -T "$prefix/current.new" "$prefix/current"
echo "install.sh: $prefix/current -> releases/$name"

# Keep the five newest releases (and whatever current points at).
ls -1t "$prefix/releases" | tail -n +6 | while read -r old; do
    [ "$old" = "$name" ] || rm -rf "${prefix:?}/releases/$old"
done

if [ "$restart" = "--restart" ]; then
    for unit in $(systemctl list-units --type=service --state=active --plain --no-legend 'carweb-web@*' | awk '{print $1}'); do
        port=${unit#carweb-web@}
        port=${port%.service}
        systemctl restart "$unit"
        tries=0
        until "$prefix/current/.venv/bin/python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/healthz', timeout=2)" 2>/dev/null; do
            tries=$((tries + 1))
            [ "$tries" -lt 60 ] || { echo "install.sh: $unit is not healthy after 60 s; stopping here" >&2; exit 1; }
            sleep 1
        done
        echo "install.sh: $unit restarted and healthy"
    done
    for unit in $(systemctl list-units --type=service --state=active --plain --no-legend 'carweb-bridge@*' | awk '{print $1}'); do
        systemctl restart "$unit"
        echo "install.sh: $unit restarted"
    done
fi
