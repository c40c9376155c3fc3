#!/usr/bin/env bash
# A multi-host ncsn cluster on one machine: one network namespace per node (its own address
# on 10.77.0.0/24), veth pairs on a private bridge, optional tc netem rate/latency limits on
# every node's link. Root only. Everything it creates carries a per-invocation id and is
# removed on exit; it only ever targets the addresses inside those namespaces.
#
#   deploy/netns/run.sh [--workers N] [--config FILE] [--set key=value]... [--rate 100mbit]
#                       [--delay 1ms] [--coordinator-unshaped] [--no-cut] [--timeout SECONDS]
#                       [--bin PATH]
#
# Default (the test): trains the run, cuts worker 2's link (ip link set down) once steps are
# being committed, checks the ring goes on without it, heals the link and checks it re-joins,
# then checks the coordinator exits 0 with the final checkpoint written and every worker
# exits 0. With --no-cut it is a benchmark: it prints a JSON line with the mean step time and
# the bytes each node put on its link per step. --coordinator-unshaped leaves the
# coordinator's link unlimited, to tell the workers' ring traffic from rank 0's commits.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

workers=3
config=$here/netns.yaml
sets=()
rate=""
delay=""
cut=1
shape_coord=1
timeout=900
bin=""
while [ $# -gt 0 ]; do
	case $1 in
	--workers) workers=$2; shift 2 ;;
	--config) config=$2; shift 2 ;;
	--set) sets+=(--set "$2"); shift 2 ;;
	--rate) rate=$2; shift 2 ;;
	--delay) delay=$2; shift 2 ;;
	--no-cut) cut=0; shift ;;
	--coordinator-unshaped) shape_coord=0; shift ;;
	--timeout) timeout=$2; shift 2 ;;
	--bin) bin=$2; shift 2 ;;
	*) echo "run.sh: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "run.sh: needs root (ip netns, tc)" >&2; exit 2; }
[ "$workers" -ge 2 ] && [ "$workers" -le 200 ] || { echo "run.sh: --workers 2..200" >&2; exit 2; }

log() { printf '%s netns: %s\n' "$(date +%T)" "$*"; }
fail() { # stderr: it is also called inside $(...)
	log "FAIL: $*" >&2
	exit 1
}

if [ -z "$bin" ]; then
	bin=$here/../../bin/ncsn
	log "building $bin"
	(cd "$here/../.." && CGO_ENABLED=0 ${GO:-go} build -o bin/ncsn ./cmd/ncsn)
fi

id=$(($$ % 10000))
net=10.77.0
br=ncbr$id
tmp=$(mktemp -d)
nss=()
pids=()
fwd_rule=(FORWARD -i "$br" -o "$br" -j ACCEPT)

cleanup() {
	rc=$?
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	if [ $rc -ne 0 ]; then
		for f in "$tmp"/*.log; do
			[ -e "$f" ] || continue
			echo "--- $(basename "$f") (last 30 lines)"
			tail -n 30 "$f"
		done
	fi
	for ns in "${nss[@]}"; do ip netns del "$ns" 2>/dev/null || true; done # takes its veth end along
	ip link del "$br" 2>/dev/null || true
	iptables -D "${fwd_rule[@]}" 2>/dev/null || true
	rm -rf "$tmp"
	[ $rc -eq 0 ] && log PASS || log "FAILED (exit $rc)"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The bridge has no address: the host takes no part in the cluster's traffic. Docker sets
# FORWARD's policy to DROP and bridged frames pass through iptables (br_netfilter), so
# traffic between this bridge's own ports is accepted explicitly.
ip link add "$br" type bridge
ip link set "$br" up
iptables -I "${fwd_rule[@]}"

# node NAME HOST-OCTET: a namespace with eth0 at $net.HOST-OCTET on the bridge.
node() {
	local ns=ncsn$id-$1 hv=ncv$id$1
	ip netns add "$ns"
	nss+=("$ns")
	ip link add "$hv" type veth peer name eth0 netns "$ns"
	ip link set "$hv" master "$br" up
	ip -n "$ns" addr add "$net.$2/24" dev eth0
	ip -n "$ns" link set eth0 up
	ip -n "$ns" link set lo up
	[ -n "$rate$delay" ] && { [ "$1" != c ] || [ $shape_coord = 1 ]; } && shape "$ns"
	return 0
}

# shape NS: limits the egress of NS's eth0 (so with every node shaped, each link is that
# fast both ways). netem does rate and delay; kernels without sch_netem (containers often
# cannot load it) still have tbf, which does the rate alone.
shape() {
	if ip netns exec "$1" tc qdisc add dev eth0 root netem ${delay:+delay "$delay"} ${rate:+rate "$rate"} limit 10000 2>/dev/null; then
		qdisc=netem
	elif [ -z "$delay" ]; then
		ip netns exec "$1" tc qdisc add dev eth0 root tbf rate "$rate" burst 64kb limit 2mb
		qdisc=tbf
	else
		fail "this kernel has no sch_netem: --delay is impossible (--rate alone works through tbf)"
	fi
}
qdisc=""

node c 10
for i in $(seq 1 "$workers"); do node "w$i" $((10 + i)); done
log "namespaces up: coordinator $net.10, workers $net.11-$net.$((10 + workers))${qdisc:+, $qdisc}${rate:+ rate $rate}${delay:+ delay $delay}"

head -c 32 /dev/urandom | base64 >"$tmp/secret"
mkdir -p "$tmp/out"
ip netns exec "ncsn$id-c" "$bin" coordinator --config "$config" "${sets[@]}" --listen "$net.10:7070" \
	--gossip "$net.10:7946" --out "$tmp/out" --secret-file "$tmp/secret" >"$tmp/coordinator.out" 2>"$tmp/coordinator.log" &
cpid=$!
pids+=("$cpid")
wpids=()
for i in $(seq 1 "$workers"); do
	# Workers take their flags from the environment, as deploy/hosts/worker.env gives them.
	ip netns exec "ncsn$id-w$i" env NCSN_JOIN="$net.10:7070" NCSN_LISTEN="$net.$((10 + i)):7071" \
		NCSN_GOSSIP="$net.$((10 + i)):7946" NCSN_SECRET_FILE="$tmp/secret" NCSN_JOIN_TIMEOUT=60s \
		"$bin" worker >"$tmp/w$i.out" 2>"$tmp/w$i.log" &
	pids+=($!)
	wpids+=($!)
done

# wait_log FILE FROM-LINE SECONDS EXTENDED-REGEX: prints the first matching line after FROM-LINE.
wait_log() {
	local deadline=$((SECONDS + $3)) hit
	while [ $SECONDS -lt $deadline ]; do
		hit=$(tail -n +"$(($2 + 1))" "$1" | grep -E -m1 -- "$4" || true)
		if [ -n "$hit" ]; then
			printf '%s\n' "$hit"
			return 0
		fi
		kill -0 "$cpid" 2>/dev/null || fail "the coordinator exited while waiting for /$4/ in $(basename "$1")"
		sleep 0.5
	done
	fail "no line /$4/ in $(basename "$1") within $3s"
}
field() { sed -n "s/.* $1=\\([^ ]*\\).*/\\1/p"; }
clog=$tmp/coordinator.log

line=$(wait_log "$clog" 0 300 "msg=step .* workers=$workers ")
log "training with $workers workers: step $(echo "$line" | field step)"

# txbytes NODE: bytes NODE has sent on its link so far (gossip and TCP/IP overhead included).
txbytes() { ip netns exec "ncsn$id-$1" cat /sys/class/net/eth0/statistics/tx_bytes; }
step0=$(echo "$line" | field step)
tx0=()
for n in c $(seq -f 'w%g' 1 "$workers"); do tx0+=("$(txbytes "$n")"); done

if [ $cut = 1 ]; then
	from=$(wc -l <"$clog")
	ip link set "ncv${id}w2" down
	log "cut worker 2 ($net.12): link down"
	wait_log "$clog" "$from" 60 "msg=view .* members=$((workers - 1)) " >/dev/null
	line=$(wait_log "$clog" "$from" 60 "msg=step .* workers=$((workers - 1)) ")
	log "the ring goes on without it: step $(echo "$line" | field step) with $((workers - 1)) workers"
	from=$(wc -l <"$clog")
	ip link set "ncv${id}w2" up
	log "healed worker 2's link"
	wait_log "$clog" "$from" 180 "msg=\"worker joined\" .* ring_addr=$net.12:" >/dev/null
	line=$(wait_log "$clog" "$from" 180 "msg=step .* workers=$workers ")
	log "worker 2 re-joined: step $(echo "$line" | field step) with $workers workers"
fi

# The coordinator exits by itself once the last step is committed and checkpointed.
deadline=$((SECONDS + timeout))
while kill -0 "$cpid" 2>/dev/null; do
	[ $SECONDS -lt $deadline ] || fail "the run did not finish within ${timeout}s"
	sleep 1
done
code=0
wait "$cpid" || code=$?
[ $code = 0 ] || fail "coordinator exited $code"
line=$(grep -E 'msg="run complete"' "$clog") || fail "no 'run complete' in the coordinator's log"
final=$(echo "$line" | sed -n 's/.* checkpoint=\([^ ]*\).*/\1/p')
[ -s "$final" ] || fail "the final checkpoint $final is missing"
for i in $(seq 1 "$workers"); do
	code=0
	timeout 60 tail --pid="${wpids[i - 1]}" -f /dev/null || fail "worker $i still running 60s after the run"
	wait "${wpids[i - 1]}" || code=$?
	[ $code = 0 ] || fail "worker $i exited $code"
done
log "run complete: $(basename "$final"), coordinator and $workers workers exited 0"

if [ $cut = 0 ]; then
	# Bytes per step on each link, from the namespaces' counters (they outlive the processes).
	i=0 wtx=0
	for n in c $(seq -f 'w%g' 1 "$workers"); do
		d=$(($(txbytes "$n") - tx0[i]))
		if [ $i = 0 ]; then ctx=$d; else wtx=$((wtx + d)); fi
		i=$((i + 1))
	done
	n=$(($(echo "$line" | field step) - step0))
	# Mean seconds per committed step, from the coordinator's step lines (logged every
	# run.log_every steps), leaving out the first quarter (joins, warm-up).
	awk -v workers="$workers" -v rate="$rate" -v delay="$delay" -v sets="${sets[*]}" \
		-v ctx="$((ctx / n))" -v wtx="$((wtx / workers / n))" -v coord="$shape_coord" '
		/msg=step / {
			split($1, t, "T"); split(t[2], h, ":"); sub("Z", "", h[3])
			s = h[1] * 3600 + h[2] * 60 + h[3]
			match($0, / step=[0-9]+/); st = substr($0, RSTART + 6, RLENGTH - 6) + 0
			n++; T[n] = s; S[n] = st
		}
		END {
			a = int(n / 4) + 1
			if (n - a < 2) { print "run.sh: too few step lines to time" > "/dev/stderr"; exit 1 }
			gsub(/--set /, "", sets)
			printf "{\"workers\":%d,\"rate\":\"%s\",\"delay\":\"%s\",\"coordinator_shaped\":%s,\"set\":\"%s\",\"steps\":%d,\"step_seconds\":%.4f,\"worker_tx_bytes_per_step\":%d,\"coordinator_tx_bytes_per_step\":%d}\n", workers, rate, delay, coord ? "true" : "false", sets, S[n] - S[a], (T[n] - T[a]) / (S[n] - S[a]), wtx, ctx
		}' "$clog"
fi
