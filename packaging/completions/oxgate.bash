# bash completion for oxgate, generated from its option table
# (oxgate --completions bash). Source it, or put it in
# /usr/share/bash-completion/completions/oxgate.
_oxgate() {
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"
    case "$prev" in
        --ssl-min-version) COMPREPLY=($(compgen -W "1.2 1.3" -- "$cur")); return ;;
        --interface) COMPREPLY=($(compgen -W "auto wsgi asgi" -- "$cur")); return ;;
        --loop) COMPREPLY=($(compgen -W "auto asyncio uvloop" -- "$cur")); return ;;
        --lifespan) COMPREPLY=($(compgen -W "auto on off" -- "$cur")); return ;;
        --ws) COMPREPLY=($(compgen -W "auto none" -- "$cur")); return ;;
        --proxy-protocol|--enable-proxy-protocol|--http-enable-proxy-protocol) COMPREPLY=($(compgen -W "[=v1 v2 auto]" -- "$cur")); return ;;
        --fastcgi-app-pm) COMPREPLY=($(compgen -W "static dynamic ondemand" -- "$cur")); return ;;
        --completions) COMPREPLY=($(compgen -W "bash zsh fish" -- "$cur")); return ;;
        --https-client-ca|--wsgi-file|--file|--root-path|--health-path|--pidfile|--pidfile2|--logto|--stop|--reload|--chain-reload|--brutal-reload|--touch-reload|--touch-chain-reload|--log-backupname|--touch-logreopen|--static-index|--mimefile|--cgi-index|--fastcgi-app-index) COMPREPLY=($(compgen -f -- "$cur")); return ;;
        --chdir|--pythonpath|--python-path|--pp|--home|--virtualenv|--venv|--pyhome|--check-static|--static-safe|--static-gzip-dir|--fastcgi-app-docroot|--plugin-dir|--plugins-dir) COMPREPLY=($(compgen -d -- "$cur")); return ;;
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "--http-socket --http --https-socket --https --sni --https-client-ca --https-client-required --ssl-min-version --http2-off --http2-max-streams --socket --uwsgi-socket --fastcgi-socket --scgi-socket --protocol --bind --listen --chmod-socket --wsgi-file --file --module --wsgi --mount --vhost --manage-script-name --callable --interface --asgi --loop --lifespan --ws --ws-max-size --ws-ping-interval --ws-ping-timeout --add-header --root-path --proxy-headers --secure-scheme-header --forwarded-allow-ips --proxy-protocol --enable-proxy-protocol --http-enable-proxy-protocol --proxy-allow-from --chdir --pythonpath --python-path --pp --import --pyimport --py-import --python-import --home --virtualenv --venv --pyhome --env --threads --master --no-master --processes --workers --lazy-apps --lazy --need-app --die-on-term --hook-master-start --quick-stop-on-int --harakiri --harakiri-verbose --max-requests --max-requests-delta --max-requests-jitter --max-worker-lifetime --reload-on-rss --evil-reload-on-rss --limit-as --worker-reload-mercy --reload-mercy --health-path --drain-delay --pidfile --pidfile2 --daemonize --daemonize2 --logto --logger --req-logger --logger-req --vacuum --stop --reload --chain-reload --brutal-reload --touch-reload --touch-chain-reload --attach-daemon --smart-attach-daemon --py-autoreload --python-autoreload --chown-socket --umask --uid --gid --limit-concurrency --keepalive-timeout --limit-post --max-connections --post-buffering --min-body-rate --limit-request-line --limit-request-fields --limit-request-field-size --buffer-size --socket-timeout --http-timeout --ini --yaml --yml --json --js --xml --strict --print-config --check-config --disable-logging --log-format --logformat --log-format-strftime --logformat-strftime --logdate --log-date --log-micros --log-x-forwarded-for --log-slow --log-4xx --log-5xx --log-big --log-zero --log-encoder --log-req-encoder --log-maxsize --log-backupname --touch-logreopen --log-reopen --log-master --threaded-logger --memory-report --static-map --static-map2 --check-static --static-index --static-skip-ext --static-safe --static-expires-type --static-expires --static-expires-uri --static-immutable --static-gzip-all --static-gzip-dir --static-gzip-ext --mimefile --cgi --cgi-allowed-ext --cgi-helper --cgi-index --cgi-timeout --fastcgi-app --fastcgi-app-processes --fastcgi-app-pm --fastcgi-app-spare --fastcgi-app-idle-timeout --fastcgi-app-max-requests --fastcgi-app-slowlog --fastcgi-app-env --fastcgi-pass --fastcgi-app-docroot --fastcgi-app-index --fastcgi-app-fallback --fastcgi-app-timeout --stats --stats-server --stats-http --stats-minified --stats-min --statsd-host --statsd-prefix --dogstatsd-tags --metrics --enable-threads --single-interpreter --plugin --plugins --plugin-dir --plugins-dir --http-websockets --close-on-exec --reaper --auto-procname --procname-prefix --procname-prefix-spaced --offload-threads --thunder-lock --no-orphans --ignore-sigpipe --ignore-write-errors --disable-write-exception --help --usage --version --completions" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}
complete -o filenames -F _oxgate oxgate
