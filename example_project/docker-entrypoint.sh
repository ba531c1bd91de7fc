#!/bin/sh
# Start the example site on this host: static files, then `migrate`, then gunicorn in this same process.
#
# Used by the Dockerfile, and as the start command on a PaaS (Procfile, render.yaml) or under systemd.
#
# - `migrate` runs here, on the host that serves, before gunicorn: the database is this host's file in
#   /dev/shm, so a migration run anywhere else (a build step, a release phase, a one-off machine) would change
#   another host's copy, and would have to take the bucket's writer lease from this one to ship it.
# - `exec` makes gunicorn this process (PID 1 in a container), so the platform's SIGTERM reaches its master,
#   which stops the workers gracefully; the host's last worker to exit makes BucketHead's final flush.
set -eu

cd "$(dirname "$0")"
python="${PYTHON:-python}"

# Static files: collected at build time where there is one (the Dockerfile), else here, once per filesystem.
if [ ! -f "${DJANGO_STATIC_ROOT:-staticfiles}/staticfiles.json" ]; then
    "$python" manage.py collectstatic --noinput
fi

# The first process of the host: takes the bucket's lease (waiting up to BUCKETHEAD_LEASE_WAIT for a previous
# host to release it), restores the database once for the host, migrates, ships it and lets the lease go.
# Its system checks stop the start here if LOCAL_DIR cannot hold the database (E101: give /dev/shm room).
"$python" manage.py migrate --noinput

# gunicorn reads WEB_CONCURRENCY (workers), PORT (it then binds 0.0.0.0:$PORT) and GUNICORN_CMD_ARGS itself;
# options given there win over the defaults below. The graceful timeout bounds the time the workers get after
# SIGTERM to finish their requests and make the final flush: keep the platform's stop timeout above it.
export PORT="${PORT:-8000}"
export WEB_CONCURRENCY="${WEB_CONCURRENCY:-3}"
export GUNICORN_CMD_ARGS="--graceful-timeout 20 --access-logfile - ${GUNICORN_CMD_ARGS:-}"
exec "$python" -m gunicorn example_site.wsgi
