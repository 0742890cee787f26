#!/usr/bin/env bash
# ft side by side with the tools it replaces, on this machine, over loopback, in one run:
# nginx (sendfile, and TLS) fetched by curl, curl's parallel mode, and an rsync daemon.
#
#   bench/compare.sh [big|small|mid|many|idle|tls|tree|up|wan|all]...  (from the project's root)
#
# Each case runs RUNS rounds (default 7), the tools interleaved within a round, and prints the
# median of each tool's figures and, for each ratio, the median of the per-round ratios (above 1:
# ft is ahead). Shared machines are noisy: quote medians, and the RUNS used. The first lines say
# what the machine is. Needs nginx, curl, rsync, openssl and python3; installs them with apt-get when it can.
#
#   big    1 GiB to /dev/null: curl from nginx, against ftclient from a cache holding the file and
#          from one too small for it (read from disk)
#   small  a 4 KiB file, asked for over and over on 64 connections by one load generator
#          (bench/load.rs), nginx against ftserver: requests per second
#   mid    the same with a 64 KiB file
#   many   1,000 files of 4 KiB saved to disk: curl -Z --parallel-max 64, against one ftclient get
#   idle   10,000 idle connections held, then each asks for a file: how many are served, and
#          ftserver's resident memory while they are held
#   tls    1 GiB over TLS 1.3 to /dev/null: curl from nginx, against ftclient --tls
#   tree   about 10,000 files in nested folders: rsync -a from an rsync daemon, against
#          ftclient get -r: first fetch, again with nothing changed, again after 1% changed
#   up     ft against itself: put of the 1,000 files of 4 KiB, and of the 1 GiB file, against get
#          of the same files, all saved to disk (get from a cache that holds them, and from one
#          that does not); above 1: put is ahead
#   wan    over a simulated wide-area link (bench/wanlink.py: a user-space delay line between two
#          network namespaces; root only): 100 Mbit/s, 40 ms round trip, 0.1% loss by default
#          (WAN_RATE Mbit/s, WAN_DELAY ms each way, WAN_LOSS), WAN_RUNS rounds (default 5). Rows:
#          a 64 MiB random file (curl from nginx, rsync, ft), 1,000 files of 4 KiB (curl -Z, rsync,
#          ft get -r), 5,000 files of 4 KiB in 50 folders (rsync -a, ft get -r), 64 MiB of log-like
#          text (rsync -az, ft), the 64 MiB file synced again after 1 MiB in its middle changed
#          (rsync -a, ft get -r), and the same change sent up (rsync -a to a daemon, ft put with a
#          token over TLS), 50 files of 256 KiB with a byte changed in each sent up (upmany), and
#          30 new files of 2 MiB sent up (upnew); times and the bytes the receiving side's end of
#          the link took in
#   all    big small mid many idle tls tree up (not wan)
set -euo pipefail

CASES=("$@")
[ ${#CASES[@]} -gt 0 ] || CASES=(all)
[ "${CASES[*]}" = all ] && CASES=(big small mid many idle tls tree up)
for case in "${CASES[@]}"; do
  case $case in big|small|mid|many|idle|tls|tree|up|wan) ;; *) echo "unknown case $case: big small mid many idle tls tree up wan all" >&2; exit 2 ;; esac
done
RUNS=${RUNS:-7}
W=${W:-${TMPDIR:-/tmp}/ft-bench}     # files served, files saved; kept between runs
CONNS=${CONNS:-64}
IDLE=${IDLE:-10000}
TREE_FILES=${TREE_FILES:-10000}

[ -f Cargo.toml ] && grep -q '^name = "ft"' Cargo.toml || { echo "run this from ft's root folder" >&2; exit 2; }
missing=()
for tool in nginx curl rsync openssl python3; do command -v $tool >/dev/null || missing+=($tool); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${missing[*]}" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light curl rsync openssl python3 >/dev/null
  else
    echo "needs ${missing[*]}: install them (as root, this script uses apt-get)" >&2; exit 2
  fi
fi

cargo build --release -q --bin ftserver --bin ftclient --example load
BIN=$PWD/target/release
LOAD=$BIN/examples/load

# What this ran on, and when.
echo "date $(date -u +%Y-%m-%dT%H:%MZ)"
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo '+changes')"
echo "machine $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), Linux $(uname -r)"
echo "files $W on $(df -T "${W%/*}" | awk 'NR==2 {print $2}')"
echo "tools $(nginx -v 2>&1 | sed 's/.*: //'), curl $(curl --version | awk 'NR==1 {print $2}'), rsync $(rsync --version | awk 'NR==1 {print $3}')"
echo "runs $RUNS"

mkdir -p "$W/root/many" "$W/out"
[ "$(stat -c %s "$W/root/big.bin" 2>/dev/null || echo 0)" = $((1 << 30)) ] || head -c $((1 << 30)) /dev/urandom >"$W/root/big.bin"
[ "$(stat -c %s "$W/root/small.bin" 2>/dev/null || echo 0)" = 4096 ] || head -c 4096 /dev/urandom >"$W/root/small.bin"
[ "$(stat -c %s "$W/root/mid.bin" 2>/dev/null || echo 0)" = 65536 ] || head -c 65536 /dev/urandom >"$W/root/mid.bin"
[ -f "$W/root/many/f1000.bin" ] || for i in $(seq 1 1000); do head -c 4096 /dev/urandom >"$W/root/many/$(printf 'f%04d.bin' "$i")"; done
if [ "$(cat "$W/tree.made" 2>/dev/null)" != "$TREE_FILES" ]; then
  rm -rf "$W/root/tree"
  python3 - "$W/root/tree" "$TREE_FILES" <<'PY'
import os, sys, random
root, n = sys.argv[1], int(sys.argv[2]); rnd = random.Random(1)
for i in range(n):
    d = os.path.join(root, "d%02d" % (i % 10), "e%02d" % ((i // 10) % 10))
    os.makedirs(d, exist_ok=True)
    size = 4 << 20 if i % 500 == 0 else (64 << 10 if i % 10 == 0 else 4096)
    with open(os.path.join(d, "f%05d.bin" % i), "wb") as f: f.write(rnd.randbytes(size))
os.makedirs(os.path.join(root, "empty", "deeper"), exist_ok=True)
PY
  echo "$TREE_FILES" >"$W/tree.made"
fi
cat "$W/root/big.bin" >/dev/null   # in the page cache for every tool alike

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (echo >/dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
ftserver() { # ftserver PORT CACHE-SIZE [flags...]: started in the background, logging to $W/ft-PORT.log
  local port=$1 size=$2; shift 2; rm -rf "$W/cache-$port"; mkdir -p "$W/cache-$port"
  (cd "$W" && exec "$BIN/ftserver" --port "$port" --root "$W/root" --cache-dir "$W/cache-$port" --cache-size "$size" "$@" \
     >"$W/ft-$port.log" 2>&1) & pids+=($!); LAST=$!; wait_port "$port"; }
now() { date +%s%N; }
ms() { local t0; t0=$(now); "$@" >/dev/null 2>"$W/last.err" || { echo "failed: $* ($(tail -1 "$W/last.err"))" >&2; exit 1; }; echo $(( ($(now) - t0) / 1000000 )); }
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
# ratio A B: the median over rounds i of A[i]/B[i] (two space-separated lists)
ratio() { local -a a=($1) b=($2) r=(); for i in "${!a[@]}"; do r+=($(awk -v x="${a[$i]}" -v y="${b[$i]}" 'BEGIN {printf "%.4f", x / y}')); done; printf '%.2f\n' "$(median "${r[@]}")"; }

NP=$(free_port); SP=$(free_port)
[ -f "$W/tls.key" ] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
  -subj /CN=localhost -keyout "$W/tls.key" -out "$W/tls.crt" 2>/dev/null
cat >"$W/nginx.conf" <<EOF
worker_processes auto; pid $W/nginx.pid; error_log $W/nginx.err; daemon off;
worker_rlimit_nofile 20000;
events { worker_connections 16384; }
http { access_log off; sendfile on; tcp_nopush on; keepalive_requests 1000000; open_file_cache max=4000;
  server { listen 127.0.0.1:$NP; root $W/root; }
  server { listen 127.0.0.1:$SP ssl; root $W/root; ssl_certificate $W/tls.crt; ssl_certificate_key $W/tls.key;
           ssl_protocols TLSv1.3; } }
EOF
nginx -c "$W/nginx.conf" & pids+=($!)
wait_port "$NP"
FP=$(free_port); ftserver "$FP" 2GiB      # a cache that holds everything
UP=$(free_port); ftserver "$UP" 1MiB      # a cache too small for big.bin: read from disk by sendfile

for case in "${CASES[@]}"; do case $case in
big)
  "$BIN/ftclient" --port "$FP" get big.bin -o - >/dev/null   # into the cache
  a=() b=() c=()
  for _ in $(seq "$RUNS"); do
    a+=($(ms curl -sf -o /dev/null "http://127.0.0.1:$NP/big.bin"))
    b+=($(ms sh -c "exec '$BIN/ftclient' --port $FP get big.bin -o - >/dev/null"))
    c+=($(ms sh -c "exec '$BIN/ftclient' --port $UP get big.bin -o - >/dev/null"))
  done
  echo "big_nginx_curl_ms $(median "${a[@]}")"
  echo "big_ft_cached_ms $(median "${b[@]}")"
  echo "big_ft_uncached_ms $(median "${c[@]}")"
  echo "ratio_big_cached_vs_nginx $(ratio "${a[*]}" "${b[*]}")"
  echo "ratio_big_uncached_vs_nginx $(ratio "${a[*]}" "${c[*]}")"
  ;;
small|mid)
  file=$([ "$case" = small ] && echo small.bin || echo mid.bin)
  "$BIN/ftclient" --port "$FP" get "$file" -o - >/dev/null
  n=() f=()
  for _ in $(seq "$RUNS"); do   # rounds of 3 s each
    n+=($("$LOAD" http "$NP" "$file" "$CONNS" 3 | awk '{print $2}'))
    f+=($("$LOAD" ft "$FP" "$file" "$CONNS" 3 | awk '{print $2}'))
  done
  echo "${case}_nginx_rps $(median "${n[@]}")"
  echo "${case}_ft_rps $(median "${f[@]}")"
  echo "ratio_${case}_vs_nginx $(ratio "${f[*]}" "${n[*]}")"
  ;;
many)
  names=$(cd "$W/root" && echo many/f*.bin)
  a=() b=()
  for _ in $(seq "$RUNS"); do
    rm -rf "$W/out/m1" && mkdir -p "$W/out/m1"
    a+=($(ms curl -sf -Z --parallel-max 64 "http://127.0.0.1:$NP/many/f[0001-1000].bin" -o "$W/out/m1/#1.bin"))
    rm -rf "$W/out/m2" && mkdir -p "$W/out/m2"
    b+=($(ms "$BIN/ftclient" --port "$FP" get $names -o "$W/out/m2"))
  done
  [ "$(find "$W/out/m2" -type f | wc -l)" = 1000 ] || { echo "ftclient did not save 1000 files" >&2; exit 1; }
  echo "many_curl_parallel64_ms $(median "${a[@]}")"
  echo "many_ft_ms $(median "${b[@]}")"
  echo "ratio_many_vs_curl $(ratio "${a[*]}" "${b[*]}")"
  ;;
up)
  PP=$(free_port); ftserver "$PP" 64MiB --allow-upload=up --allow-overwrite
  names=$(cd "$W/root" && echo many/f*.bin)
  "$BIN/ftclient" --port "$FP" get $names big.bin -o "$W/out/warm" >/dev/null 2>&1 && rm -rf "$W/out/warm"   # into the cache
  a=() b=() c=() d=() e=() f=()
  # Each timed command starts with nothing left to write back from the one before (sync, untimed):
  # otherwise the third gigabyte written in a round is slowed by the writeback of the first two.
  for _ in $(seq "$RUNS"); do
    rm -rf "$W/out/g1" "$W/out/g2" "$W/root/up"; sync
    a+=($(ms "$BIN/ftclient" -q --port "$FP" get $names -o "$W/out/g1")); sync
    b+=($(ms "$BIN/ftclient" -q --port "$UP" get $names -o "$W/out/g2")); sync
    c+=($(ms sh -c "cd '$W/root' && exec '$BIN/ftclient' -q --port $PP put $names --to up/many"))
    rm -rf "$W/out/g1" "$W/out/g2"; sync
    d+=($(ms "$BIN/ftclient" -q --port "$FP" get big.bin -o "$W/out/g1")); sync
    e+=($(ms "$BIN/ftclient" -q --port "$UP" get big.bin -o "$W/out/g2")); sync
    f+=($(ms "$BIN/ftclient" -q --port "$PP" put "$W/root/big.bin" --to up/big))
  done
  [ "$(find "$W/root/up/many" -type f | wc -l)" = 1000 ] && cmp -s "$W/root/up/big/big.bin" "$W/root/big.bin" \
    || { echo "put did not store what was sent" >&2; exit 1; }
  rm -rf "$W/out/g1" "$W/out/g2" "$W/root/up"
  echo "up_many_get_cached_ms $(median "${a[@]}")"
  echo "up_many_get_uncached_ms $(median "${b[@]}")"
  echo "up_many_put_ms $(median "${c[@]}")"
  echo "ratio_up_many_put_vs_get_cached $(ratio "${a[*]}" "${c[*]}")"
  echo "ratio_up_many_put_vs_get_uncached $(ratio "${b[*]}" "${c[*]}")"
  echo "up_big_get_cached_ms $(median "${d[@]}")"
  echo "up_big_get_uncached_ms $(median "${e[@]}")"
  echo "up_big_put_ms $(median "${f[@]}")"
  echo "ratio_up_big_put_vs_get_cached $(ratio "${d[*]}" "${f[*]}")"
  echo "ratio_up_big_put_vs_get_uncached $(ratio "${e[*]}" "${f[*]}")"
  ;;
idle)
  IP=$(free_port); ftserver "$IP" 64MiB --max-conns $((IDLE + 100))
  "$LOAD" idle "$IP" small.bin "$IDLE" 3 >"$W/idle.out" & lp=$!
  sleep 2.5; held=$(awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$LAST/status"); wait $lp
  echo "idle_$(tr ' ' '_' <"$W/idle.out")"
  echo "idle_ftserver_rss_mib $held"
  ;;
tls)
  TP=$(free_port); rm -f "$W/known_hosts" "$W/ft.identity"
  ftserver "$TP" 2GiB --identity "$W/ft.identity"
  wait_port "$SP"
  export FT_KNOWN_HOSTS=$W/known_hosts
  "$BIN/ftclient" --tls --accept-new --port "$TP" get big.bin -o - >/dev/null   # pin the key; into the cache
  a=() b=()
  for _ in $(seq "$RUNS"); do
    a+=($(ms curl -sfk --tlsv1.3 -o /dev/null "https://127.0.0.1:$SP/big.bin"))
    b+=($(ms sh -c "exec '$BIN/ftclient' --tls --port $TP get big.bin -o - >/dev/null"))
  done
  echo "tls_nginx_curl_ms $(median "${a[@]}")"
  echo "tls_ft_ms $(median "${b[@]}")"
  echo "ratio_tls_vs_nginx $(ratio "${a[*]}" "${b[*]}")"
  ;;
tree)
  RP=$(free_port)
  printf 'port = %s\nuse chroot = no\npid file = %s/rsyncd.pid\n[root]\npath = %s/root\nread only = yes\n' "$RP" "$W" "$W" >"$W/rsyncd.conf"
  rm -f "$W/rsyncd.pid"; rsync --daemon --no-detach --config="$W/rsyncd.conf" --address=127.0.0.1 & pids+=($!)
  GP=$(free_port); ftserver "$GP" 64MiB
  wait_port "$RP"
  r1=() f1=() r2=() f2=() r3=() f3=()
  for i in $(seq "$RUNS"); do
    rm -rf "$W/out/tr" "$W/out/tf"; mkdir -p "$W/out/tr" "$W/out/tf"; sync
    r1+=($(ms rsync -a "rsync://127.0.0.1:$RP/root/tree" "$W/out/tr/")); f1+=($(ms "$BIN/ftclient" -q --port "$GP" get -r tree -o "$W/out/tf"))
    r2+=($(ms rsync -a "rsync://127.0.0.1:$RP/root/tree" "$W/out/tr/")); f2+=($(ms "$BIN/ftclient" -q --port "$GP" get -r tree -o "$W/out/tf"))
    python3 - "$W/root/tree" "$TREE_FILES" "$i" <<'PY'
import os, sys, random
root, n, run = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]); rnd = random.Random(100 + run)
for i in rnd.sample(range(n), max(1, n // 100)):
    p = os.path.join(root, "d%02d" % (i % 10), "e%02d" % ((i // 10) % 10), "f%05d.bin" % i)
    with open(p + ".new", "wb") as f: f.write(rnd.randbytes(os.path.getsize(p)))
    os.replace(p + ".new", p)
PY
    sleep 1.1   # past both servers' guards against files still being written
    r3+=($(ms rsync -a "rsync://127.0.0.1:$RP/root/tree" "$W/out/tr/")); f3+=($(ms "$BIN/ftclient" -q --port "$GP" get -r tree -o "$W/out/tf"))
    diff -r "$W/out/tr/tree" "$W/out/tf/tree" >/dev/null || { echo "ftclient's tree differs from rsync's" >&2; exit 1; }
  done
  echo "tree_first_rsync_ms $(median "${r1[@]}") ft_ms $(median "${f1[@]}")"
  echo "tree_nochange_rsync_ms $(median "${r2[@]}") ft_ms $(median "${f2[@]}")"
  echo "tree_change1pct_rsync_ms $(median "${r3[@]}") ft_ms $(median "${f3[@]}")"
  echo "ratio_tree_first_vs_rsync $(ratio "${r1[*]}" "${f1[*]}")"
  echo "ratio_tree_nochange_vs_rsync $(ratio "${r2[*]}" "${f2[*]}")"
  echo "ratio_tree_change1pct_vs_rsync $(ratio "${r3[*]}" "${f3[*]}")"
  ;;
wan)
  [ "$(id -u)" = 0 ] || { echo "wan needs root (network namespaces)" >&2; exit 2; }
  WAN_RATE=${WAN_RATE:-100}; WAN_DELAY=${WAN_DELAY:-20}; WAN_LOSS=${WAN_LOSS:-0.001}; WAN_RUNS=${WAN_RUNS:-5}
  A=ftba$$; B=ftbb$$; WR=$W/wan; SA=10.210.0.1
  rm -rf "$WR/out" "$WR/root/up" "$WR/rup"; mkdir -p "$WR/root/w" "$WR/root/d" "$WR/root/t" "$WR/root/m" "$WR/root/up" "$WR/rup" "$WR/out" "$WR/local"
  ip netns add "$A" && ip netns add "$B" || { echo "cannot make network namespaces" >&2; exit 1; }
  trap 'cleanup; ip netns del "$A" 2>/dev/null; ip netns del "$B" 2>/dev/null' EXIT
  ip -n "$A" link set lo up; ip -n "$B" link set lo up
  rm -f "$WR/ready"
  python3 bench/wanlink.py "$A" "$B" --rate-mbit "$WAN_RATE" --delay-ms "$WAN_DELAY" --loss "$WAN_LOSS" \
    --ready "$WR/ready" 2>"$WR/link.log" & pids+=($!)
  for _ in $(seq 100); do [ -s "$WR/ready" ] && break; sleep 0.05; done
  [ -s "$WR/ready" ] || { echo "the link did not come up: $(cat "$WR/link.log")" >&2; exit 1; }
  echo "wan_link ${WAN_RATE}mbit rtt_ms $((2 * WAN_DELAY)) loss $WAN_LOSS runs $WAN_RUNS"
  [ "$(stat -c %s "$WR/root/w/big.bin" 2>/dev/null || echo 0)" = $((64 << 20)) ] || head -c $((64 << 20)) /dev/urandom >"$WR/root/w/big.bin"
  [ -f "$WR/root/t/log.txt" ] || python3 bench/files.py text "$WR/root/t/log.txt" 64
  [ -f "$WR/root/m/f1000.bin" ] || for i in $(seq 1 1000); do head -c 4096 /dev/urandom >"$WR/root/m/f$i.bin"; done
  [ -d "$WR/root/tr" ] || python3 bench/files.py tree "$WR/root/tr" 5000
  cp "$WR/root/w/big.bin" "$WR/root/d/delta.bin"; cp "$WR/root/w/big.bin" "$WR/local/up.bin"
  # to send up: 50 files of 256 KiB (one byte changed in each per round), 30 new ones of 2 MiB
  mkdir -p "$WR/local/um" "$WR/local/un"
  [ -f "$WR/local/um/f50.bin" ] || for i in $(seq 1 50); do head -c $((256 << 10)) /dev/urandom >"$WR/local/um/f$i.bin"; done
  [ -f "$WR/local/un/f30.bin" ] || for i in $(seq 1 30); do head -c $((2 << 20)) /dev/urandom >"$WR/local/un/f$i.bin"; done
  printf '%s\n' "worker_processes auto; pid $WR/nginx.pid; error_log $WR/nginx.err; daemon off;" \
    "events { worker_connections 4096; }" "http { access_log off; sendfile on; tcp_nopush on;" \
    "  server { listen $SA:8080; root $WR/root; } }" >"$WR/nginx.conf"
  ip netns exec "$A" nginx -c "$WR/nginx.conf" & pids+=($!)
  printf 'port = 8730\nuse chroot = no\npid file = %s/rsyncd.pid\n[root]\npath = %s/root\nread only = yes\n[up]\npath = %s/rup\nread only = no\nuid = root\ngid = root\n' \
    "$WR" "$WR" "$WR" >"$WR/rsyncd.conf"
  rm -f "$WR/rsyncd.pid"; ip netns exec "$A" rsync --daemon --no-detach --config="$WR/rsyncd.conf" --address=$SA & pids+=($!)
  # Two ftservers: one anyone may read from in plain text, one taking uploads from a token over TLS.
  rm -rf "$WR/cache" "$WR/cache2" "$WR/xdg" "$WR/tokens"; mkdir -p "$WR/cache" "$WR/cache2" "$WR/xdg"
  TOKEN=$("$BIN/ftserver" --auth-file "$WR/tokens" token add bench --write 2>/dev/null)
  (cd "$WR" && exec ip netns exec "$A" "$BIN/ftserver" --bind $SA --port 9000 --root "$WR/root" --cache-dir "$WR/cache" \
     --allow-anonymous --allow-plaintext >"$WR/ft.log" 2>&1) & pids+=($!)
  (cd "$WR" && XDG_CONFIG_HOME=$WR/xdg exec ip netns exec "$A" "$BIN/ftserver" --bind $SA --port 9001 --root "$WR/root" \
     --cache-dir "$WR/cache2" --auth-file "$WR/tokens" --allow-upload=up --allow-overwrite >"$WR/ft2.log" 2>&1) & pids+=($!)
  inb() { ip netns exec "$B" "$@"; }
  for port in 8080 8730 9000 9001; do
    for _ in $(seq 200); do inb bash -c "(echo >/dev/tcp/$SA/$port) 2>/dev/null" && break; sleep 0.05; done
  done
  FTC=("$BIN/ftclient" --host $SA --port 9000 --plaintext -q)
  FTU=(env XDG_CONFIG_HOME="$WR/xdg" FT_TOKEN="$TOKEN" "$BIN/ftclient" --host $SA --port 9001 --accept-new -q)
  rx() { ip netns exec "$1" sh -c 'cat /sys/class/net/wl*/statistics/rx_bytes'; }
  # wan_ms NS CMD...: "ms bytes", the bytes being what namespace NS's end of the link took in
  wan_ms() { local ns=$1 b0 t; shift; b0=$(rx "$ns"); t=$(ms ip netns exec "$B" "$@"); echo "$t $(( $(rx "$ns") - b0 ))"; }
  declare -A T X
  add() { T[$1]="${T[$1]:-} $2"; X[$1]="${X[$1]:-} $3"; }
  inb "${FTU[@]}" put "$WR/local/up.bin" --to up >/dev/null; inb rsync -a "$WR/local/up.bin" "rsync://$SA:8730/up/"
  inb "${FTU[@]}" put -r "$WR/local/um" --to up >/dev/null; inb rsync -a "$WR/local/um" "rsync://$SA:8730/up/"
  for i in $(seq "$WAN_RUNS"); do
    O=$WR/out; rm -rf "$O/c" "$O/r" "$O/f"; mkdir -p "$O/c/m" "$O/r" "$O/f"
    add big_curl $(wan_ms "$B" curl -sf -o "$O/c/big.bin" "http://$SA:8080/w/big.bin")
    add big_rsync $(wan_ms "$B" rsync -a "rsync://$SA:8730/root/w/big.bin" "$O/r/")
    add big_ft $(wan_ms "$B" "${FTC[@]}" get w/big.bin -o "$O/f")
    cmp -s "$O/f/w/big.bin" "$WR/root/w/big.bin" || { echo "ft's big.bin differs" >&2; exit 1; }
    add many_curl $(wan_ms "$B" curl -sf -Z --parallel-max 64 "http://$SA:8080/m/f[1-1000].bin" -o "$O/c/m/f#1.bin")
    add many_rsync $(wan_ms "$B" rsync -a "rsync://$SA:8730/root/m" "$O/r/")
    add many_ft $(wan_ms "$B" "${FTC[@]}" get -r m -o "$O/f")
    add tree_rsync $(wan_ms "$B" rsync -a "rsync://$SA:8730/root/tr" "$O/r/")
    add tree_ft $(wan_ms "$B" "${FTC[@]}" get -r tr -o "$O/f")
    diff -r "$O/r/tr" "$O/f/tr" >/dev/null || { echo "ft's tree differs from rsync's" >&2; exit 1; }
    add text_rsync_z $(wan_ms "$B" rsync -az "rsync://$SA:8730/root/t" "$O/r/")
    add text_ft $(wan_ms "$B" "${FTC[@]}" get -r t -o "$O/f")
    cmp -s "$O/f/t/log.txt" "$WR/root/t/log.txt" || { echo "ft's log.txt differs" >&2; exit 1; }
    inb rsync -a "rsync://$SA:8730/root/d" "$O/r/"; inb "${FTC[@]}" get -r d -o "$O/f"
    python3 bench/files.py overwrite "$WR/root/d/delta.bin" $((1 << 20)) "$i"
    python3 bench/files.py overwrite "$WR/local/up.bin" $((1 << 20)) "$((i + 100))"
    python3 bench/files.py touchall "$WR/local/um" "$i"
    sleep 1.1   # past both servers' guards against files still being written
    add delta_rsync $(wan_ms "$B" rsync -a "rsync://$SA:8730/root/d" "$O/r/")
    add delta_ft $(wan_ms "$B" "${FTC[@]}" get -r d -o "$O/f")
    cmp -s "$O/f/d/delta.bin" "$WR/root/d/delta.bin" || { echo "ft's delta.bin differs after the sync" >&2; exit 1; }
    add up_rsync $(wan_ms "$A" rsync -a "$WR/local/up.bin" "rsync://$SA:8730/up/")
    add up_ft $(wan_ms "$A" "${FTU[@]}" put "$WR/local/up.bin" --to up)
    cmp -s "$WR/root/up/up.bin" "$WR/local/up.bin" || { echo "ft's up.bin differs after the put" >&2; exit 1; }
    add upmany_rsync $(wan_ms "$A" rsync -a "$WR/local/um" "rsync://$SA:8730/up/")
    add upmany_ft $(wan_ms "$A" "${FTU[@]}" put -r "$WR/local/um" --to up)
    diff -r "$WR/root/up/um" "$WR/local/um" >/dev/null || { echo "ft's um differs after the put" >&2; exit 1; }
    rm -rf "$WR/root/up/un" "$WR/rup/un"
    add upnew_rsync $(wan_ms "$A" rsync -a "$WR/local/un" "rsync://$SA:8730/up/")
    add upnew_ft $(wan_ms "$A" "${FTU[@]}" put -r "$WR/local/un" --to up)
    diff -r "$WR/root/up/un" "$WR/local/un" >/dev/null || { echo "ft's un differs after the put" >&2; exit 1; }
  done
  for k in big many tree text delta up upmany upnew; do
    case $k in big) peers="big_curl big_rsync";; many) peers="many_curl many_rsync";; tree) peers="tree_rsync";;
      text) peers="text_rsync_z";; delta) peers="delta_rsync";; up) peers="up_rsync";; upmany) peers="upmany_rsync";;
      upnew) peers="upnew_rsync";; esac
    for name in $peers ${k}_ft; do echo "wan_${name}_ms $(median ${T[$name]}) bytes $(median ${X[$name]})"; done
    best=; for name in $peers; do
      if [ -z "$best" ] || awk -v a="$(median ${T[$name]})" -v b="$(median ${T[$best]})" 'BEGIN {exit !(a < b)}'; then best=$name; fi
    done
    echo "ratio_wan_${k}_vs_${best#"${k}_"} $(ratio "${T[$best]}" "${T[${k}_ft]}") bytes_ratio $(ratio "${X[$best]}" "${X[${k}_ft]}")"
  done
  ;;
*) echo "unknown case $case: big small mid many idle tls tree up wan all" >&2; exit 2 ;;
esac; done
