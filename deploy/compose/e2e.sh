#!/usr/bin/env bash
# End-to-end test of the compose cluster (make e2e): builds the image, brings up a coordinator
# and 3 workers, and checks that
#   1. training makes progress with 3 workers;
#   2. after `docker kill` of one worker the ring goes on with 2, and the killed container,
#      started again, re-joins (a new node name: no memberlist conflict);
#   3. after `docker kill` + `docker start` of the coordinator it resumes from its newest
#      checkpoint and the workers re-join;
#   4. the run completes: the coordinator and every worker exit 0 and the final checkpoint
#      loads (ncsn sample reads it from the named volume).
# Every wait watches a log line or a container state and has a deadline. Exits non-zero on
# any failure, after printing the logs; always tears everything down.
#   E2E_IMAGE (ncsn:e2e), E2E_SKIP_BUILD=1 (use the image as is), NCSN_NET (a free /24 prefix)
set -euo pipefail
cd "$(dirname "$0")"

image=${E2E_IMAGE:-ncsn:e2e}
steps=1500 # run.steps of e2e.yaml
project=ncsn-e2e-$$
if docker compose version >/dev/null 2>&1; then
	compose=(docker compose)
else
	compose=(docker-compose)
fi
compose+=(-p "$project" -f docker-compose.yml)

tmp=$(mktemp -d)
export NCSN_IMAGE=$image NCSN_CONFIG=./e2e.yaml
export NCSN_DATA=${NCSN_DATA:-/usr/share/datasets/fashion-mnist}
export NCSN_SECRET_FILE=$tmp/secret
# A /24 per invocation, so that two runs on one engine do not fight over the subnet.
export NCSN_NET=${NCSN_NET:-172.29.$((100 + $$ % 100))}

log() { printf '%s e2e: %s\n' "$(date +%T)" "$*"; }
fail() { # stderr: it is also called inside $(...)
	log "FAIL: $*" >&2
	exit 1
}

cleanup() {
	rc=$?
	if [ $rc -ne 0 ]; then
		log "logs of the failed run (last 60 lines per container):"
		"${compose[@]}" logs --no-color --tail=60 2>&1 || true
	fi
	"${compose[@]}" down -v --remove-orphans -t 5 >/dev/null 2>&1 || true
	rm -rf "$tmp"
	[ $rc -eq 0 ] && log PASS || log "FAILED (exit $rc)"
}
trap cleanup EXIT

[ -r "$NCSN_DATA/train-images-idx3-ubyte.gz" ] || fail "no Fashion-MNIST in $NCSN_DATA (apt-get install dataset-fashion-mnist, or set NCSN_DATA)"

if [ "${E2E_SKIP_BUILD:-0}" != 1 ]; then
	log "building $image"
	../docker/build.sh "$image"
fi

# The secret is bind-mounted into the containers, whose user is 65532: it must be readable
# by others (the folder around it stays private to this user).
head -c 32 /dev/urandom | base64 >"$NCSN_SECRET_FILE"
chmod 0644 "$NCSN_SECRET_FILE"

cid() { # container id of service $1, replica $2 (1-based)
	"${compose[@]}" ps -q "$1" | sed -n "${2:-1}p"
}
lines() { docker logs "$1" 2>&1 | wc -l; }

# wait_log CONTAINER FROM-LINE SECONDS EXTENDED-REGEX: waits until a log line after FROM-LINE
# matches, and prints it.
wait_log() {
	local c=$1 from=$2 secs=$3 re=$4 deadline=$((SECONDS + $3)) hit
	while [ $SECONDS -lt $deadline ]; do
		hit=$(docker logs "$c" 2>&1 | tail -n +"$((from + 1))" | grep -E -m1 -- "$re" || true)
		if [ -n "$hit" ]; then
			printf '%s\n' "$hit"
			return 0
		fi
		[ "$(docker inspect -f '{{.State.Running}}' "$c")" = true ] || fail "$c stopped while waiting for /$re/"
		sleep 0.5
	done
	fail "no log line /$re/ from $c within ${secs}s"
}
field() { sed -n "s/.* $1=\\([^ ]*\\).*/\\1/p"; } # value of key=value in a log line

# wait_exit CONTAINER SECONDS: waits for the container to stop and prints its exit code.
wait_exit() {
	local deadline=$((SECONDS + $2))
	while [ "$(docker inspect -f '{{.State.Running}}' "$1")" = true ]; do
		[ $SECONDS -lt $deadline ] || fail "$1 still running after ${2}s"
		sleep 1
	done
	docker inspect -f '{{.State.ExitCode}}' "$1"
}

log "up: 1 coordinator + 3 workers (project $project, network $NCSN_NET.0/24)"
"${compose[@]}" up -d --scale worker=3
coord=$(cid coordinator)
[ -n "$coord" ] || fail "no coordinator container"

# 1. Progress with 3 workers.
line=$(wait_log "$coord" 0 180 'msg=step .* workers=3 ')
log "progress with 3 workers: step $(echo "$line" | field step)"

# 2. Kill a worker: a new view without it, and steps committed by the 2 left.
victim=$(cid worker 1)
from=$(lines "$coord")
docker kill "$victim" >/dev/null
log "killed worker $(docker inspect -f '{{.Name}}' "$victim")"
wait_log "$coord" "$from" 60 'msg=view .* members=2 ' >/dev/null
line=$(wait_log "$coord" "$from" 60 'msg=step .* workers=2 ')
log "training continues with 2 workers: step $(echo "$line" | field step)"

# The killed container started again re-joins the ring under a new node name.
from=$(lines "$coord")
docker start "$victim" >/dev/null
wait_log "$coord" "$from" 90 'msg="worker joined"' >/dev/null
line=$(wait_log "$coord" "$from" 90 'msg=step .* workers=3 ')
log "restarted worker re-joined: step $(echo "$line" | field step) with 3 workers"

# 3. Kill and restart the coordinator: it resumes from its newest checkpoint, whose step must
# be at least that of the last checkpoint it logged, and the workers re-join.
line=$(wait_log "$coord" "$from" 60 'msg=checkpoint ')
from=$(lines "$coord")
ckpt=$(docker logs "$coord" 2>&1 | grep -E 'msg=checkpoint ' | tail -1 | field step)
docker kill "$coord" >/dev/null
log "killed the coordinator (last logged checkpoint: step $ckpt)"
[ "$ckpt" -lt "$steps" ] || fail "the run ended before the coordinator could be restarted: lengthen e2e.yaml"
docker start "$coord" >/dev/null
line=$(wait_log "$coord" "$from" 60 'msg=resumed ')
resumed=$(echo "$line" | field step)
[ "$resumed" -ge "$ckpt" ] && [ "$resumed" -gt 0 ] || fail "resumed at step $resumed, but step $ckpt was checkpointed"
line=$(wait_log "$coord" "$from" 180 'msg=step .* workers=3 ')
log "coordinator resumed at step $resumed; step $(echo "$line" | field step) committed with 3 workers"

# 4. Completion: every process exits 0 and the final checkpoint loads.
code=$(wait_exit "$coord" 900)
[ "$code" = 0 ] || fail "coordinator exited $code"
docker logs "$coord" 2>&1 | tail -n +"$((from + 1))" | grep -E "msg=\"run complete\" .* first_step=$resumed( |$)" >/dev/null ||
	fail "no 'run complete' with first_step=$resumed after the restart"
for w in $("${compose[@]}" ps -q worker); do
	code=$(wait_exit "$w" 120)
	[ "$code" = 0 ] || fail "worker $(docker inspect -f '{{.Name}}' "$w") exited $code"
done
vol=$(docker inspect -f '{{range .Mounts}}{{if eq .Destination "/out"}}{{.Name}}{{end}}{{end}}' "$coord")
out=$(docker run --rm -v "$vol:/out:ro" "$image" sample --checkpoint "/out/checkpoints/ckpt-$steps.safetensors" \
	--n 4 --steps-per-level 1 --out /tmp/s.png 2>&1) || fail "the final checkpoint does not load: $out"
log "run complete: coordinator and $("${compose[@]}" ps -q worker | wc -l) workers exited 0; ckpt-$steps.safetensors loads"
