# Sourced by bench/php.sh and bench/cgi.sh: writes $DIR/nginx/nginx.conf,
# an nginx that passes LOCATION under ROOT to the FastCGI server on $SOCK,
# listening on 127.0.0.1:$PORT.
#   nginx_fastcgi_conf KEEP ROOT LOCATION
# KEEP=1: nginx keeps its connections (upstream keepalive and
# fastcgi_keep_conn); 0: a connection per request, nginx's default.
nginx_fastcgi_conf() {
  local pass="fastcgi_pass unix:$SOCK;" upstream=""
  if [[ $1 == 1 ]]; then
    upstream="upstream app { server unix:$SOCK; keepalive 16; }"
    pass="fastcgi_pass app; fastcgi_keep_conn on;"
  fi
  cat >"$DIR/nginx/nginx.conf" <<CONF
worker_processes 1; user root; pid $DIR/nginx/logs/nginx.pid; error_log $DIR/nginx/logs/error.log;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 100000; client_body_temp_path $DIR/nginx/tmp; $upstream
  server { listen 127.0.0.1:$PORT; root $2;
    location $3 { $pass include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name; } } }
CONF
}
