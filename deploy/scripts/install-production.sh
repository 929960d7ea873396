#!/bin/sh
# Install Tally the production way on Debian 12: PostgreSQL + Redis + the console (daphne) + a Celery
# worker + Celery beat, as systemd services, from this checkout. Run as root from the repository root.
# Idempotent: re-running upgrades the code and dependencies and restarts the services.
set -eu
APP_DIR=/opt/tally
ENV_FILE=/etc/tally/tally.env

apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    python3 python3-venv python3-dev gcc postgresql redis-server rsync

id tally >/dev/null 2>&1 || useradd --system --home /var/lib/tally --shell /usr/sbin/nologin tally
install -d -o tally -g tally -m 0750 /var/lib/tally
install -d -m 0750 -g tally /etc/tally

rsync -a --delete --exclude .venv --exclude var --exclude .git --exclude '*.so' ./ "$APP_DIR/"
[ -x "$APP_DIR/.venv/bin/python" ] || python3 -m venv "$APP_DIR/.venv"
"$APP_DIR/.venv/bin/pip" install -q --upgrade pip
"$APP_DIR/.venv/bin/pip" install -q --no-deps -r "$APP_DIR/requirements.lock"
"$APP_DIR/.venv/bin/python" "$APP_DIR/deploy/scripts/build_stat_reader.py" --force --strict

if [ ! -f "$ENV_FILE" ]; then
    db_password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
    runuser -u postgres -- psql -q -c "CREATE ROLE tally LOGIN PASSWORD '$db_password'" || true
    runuser -u postgres -- createdb -O tally tally || true
    sed -e "s|^SECRET_KEY=.*|SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_urlsafe(50))')|" \
        -e "s|^DATABASE_URL=.*|DATABASE_URL=postgres://tally:$db_password@127.0.0.1:5432/tally|" \
        -e "s|^TALLY_ENCRYPTION_KEYS=.*|TALLY_ENCRYPTION_KEYS=$("$APP_DIR/.venv/bin/python" -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')|" \
        "$APP_DIR/deploy/tally.env.example" > "$ENV_FILE"
    chgrp tally "$ENV_FILE" && chmod 0640 "$ENV_FILE"
    echo "Wrote $ENV_FILE: set ALLOWED_HOSTS, CSRF_TRUSTED_ORIGINS and TALLY_CALLBACK_BASE_URL for this host."
fi

cd "$APP_DIR"
set -a; . "$ENV_FILE"; set +a
runuser -u tally -- "$APP_DIR/.venv/bin/python" manage.py migrate --noinput
runuser -u tally -- "$APP_DIR/.venv/bin/python" manage.py check --deploy
runuser -u tally -- "$APP_DIR/.venv/bin/python" manage.py bootstrap_admin

cp deploy/systemd/tally-web.service deploy/systemd/tally-ws.service deploy/systemd/tally-worker.service deploy/systemd/tally-beat.service /etc/systemd/system/  # tally-agent.service goes on the nginx hosts (deploy/agent/README.md)
systemctl daemon-reload
systemctl enable --now postgresql redis-server tally-web tally-ws tally-worker tally-beat
systemctl restart tally-web tally-ws tally-worker tally-beat
echo "Tally: HTTP on :8000 (uWSGI), websockets on 127.0.0.1:8001 (daphne); deploy/nginx-console.conf is a TLS front."
