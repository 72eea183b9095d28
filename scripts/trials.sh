#!/usr/bin/env bash
# Repeatable data-safety trials (issue "Nothing lost"), each run N times, reporting counts:
#   appenders  two `diff --append` onto one log at once (one with --wait, one without)
#   kill-append  SIGKILL at a random moment of a `diff --append`
#   kill-compact SIGKILL at a random moment of `compact --to-seq --rest-log`
#   full-disk  an append that runs out of space (a small tmpfs when it can be mounted, else a
#              file-size limit, which fails the write the same way)
# Usage: scripts/trials.sh [N=100] [TRIAL...]   (builds the release binary first)
set -uo pipefail
cd "$(dirname "$0")/.."
N=${1:-100}
shift || true
TRIALS=("$@")
[ ${#TRIALS[@]} -eq 0 ] && TRIALS=(appenders kill-append kill-compact full-disk)
cargo build --release --locked -q
MMSB=$PWD/target/release/mmsb
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mmsb-trials.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

# Snapshots: s0, and s1..s3 = s0 plus a different synthetic log each (the same seed, page count
# and size give the same checkpoint; the log options change the log's draws).
"$MMSB" gen -o s0.ckpt --seed 1 --pages 48 --total-size 48MiB --deltas 0 >/dev/null
mixes=(x sparse=1 sparse=1,masked=1 sparse=1,fill=1)
for i in 1 2 3; do
  "$MMSB" gen -o g.ckpt --log g$i.log --seed 1 --pages 48 --total-size 48MiB --deltas $((i * 1500)) \
    --mix "${mixes[$i]}" --delta-bytes 64..2048 >/dev/null
  "$MMSB" replay g.ckpt g$i.log -o s$i.ckpt >/dev/null
  rm -rf g.ckpt g$i.log
done

# bytes_equal X.ckpt [LOG] Y.ckpt: the state X (+LOG) has Y's bytes (epochs aside).
bytes_equal() {
  if [ $# -eq 3 ]; then "$MMSB" diff --bytes-only -q "$1" --a-log "$2" "$3"; else "$MMSB" diff --bytes-only -q "$1" "$2"; fi
}

fresh_log() { # a log against s0 holding s0 -> s1
  rm -rf L.log; "$MMSB" diff s0.ckpt s1.ckpt --emit-log L.log >/dev/null
}

trial_appenders() {
  local corrupt=0 lost=0 refused=0 ok=0
  for t in $(seq "$N"); do
    fresh_log
    local before; before=$("$MMSB" inspect --json L.log | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["records"])')
    "$MMSB" diff s0.ckpt --a-log L.log s2.ckpt --emit-log L.log --append --json >a.json 2>a.err & pa=$!
    "$MMSB" diff s0.ckpt --a-log L.log s3.ckpt --emit-log L.log --append --wait --json >b.json 2>b.err & pb=$!
    wait $pa; ra=$?; wait $pb; rb=$?
    if ! "$MMSB" verify s0.ckpt L.log 2>/dev/null; then corrupt=$((corrupt + 1)); continue; fi
    local acked=0
    [ $ra -eq 0 ] && acked=$((acked + $(python3 -c 'import json; print(json.load(open("a.json"))["records"])')))
    [ $rb -eq 0 ] && acked=$((acked + $(python3 -c 'import json; print(json.load(open("b.json"))["records"])')))
    [ $ra -eq 2 ] && grep -q 'locked by another writer, pid' a.err && refused=$((refused + 1))
    local after; after=$("$MMSB" inspect --json L.log | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["records"])')
    [ $((after - before)) -ne $acked ] && lost=$((lost + 1))
    # The state is the last acknowledged snapshot's.
    if [ $rb -eq 0 ] && ! bytes_equal s0.ckpt L.log s3.ckpt && ! bytes_equal s0.ckpt L.log s2.ckpt; then lost=$((lost + 1)); fi
    [ $rb -eq 0 ] && ok=$((ok + 1))
  done
  echo "appenders: $N trials: $corrupt corrupt logs, $lost trials with acknowledged records lost, $refused second writers refused at once (exit 2, pid named), $ok waiting writers completed"
}

trial_kill_append() {
  local half=0 corrupt=0 old=0 new=0
  for t in $(seq "$N"); do
    fresh_log
    "$MMSB" diff s0.ckpt --a-log L.log s2.ckpt --emit-log L.log --append >/dev/null 2>&1 & p=$!
    sleep "0.$(printf %03d $((RANDOM % 80)))"
    kill -9 $p 2>/dev/null; wait $p 2>/dev/null
    "$MMSB" recover L.log >/dev/null 2>&1 || { corrupt=$((corrupt + 1)); continue; }
    "$MMSB" verify s0.ckpt L.log 2>/dev/null || { corrupt=$((corrupt + 1)); continue; }
    if bytes_equal s0.ckpt L.log s1.ckpt; then old=$((old + 1))
    elif bytes_equal s0.ckpt L.log s2.ckpt; then new=$((new + 1))
    else half=$((half + 1)); fi
  done
  echo "kill-append: $N trials: $half half snapshots, $corrupt corrupt logs ($old left the old state, $new the new one)"
}

trial_kill_compact() {
  local unpaired=0 mismatched=0 both=0 neither=0
  fresh_log
  "$MMSB" diff s0.ckpt --a-log L.log s2.ckpt --emit-log L.log --append >/dev/null
  local seq; seq=$("$MMSB" inspect --json L.log | python3 -c 'import json,sys; d=json.load(sys.stdin)[0]; print((d["first_seq"] + d["last_seq"]) // 2)')
  local want; want=$("$MMSB" replay --json s0.ckpt L.log | python3 -c 'import json,sys; print(json.load(sys.stdin)["state_hash"])')
  for t in $(seq "$N"); do
    rm -rf C.ckpt C.log
    "$MMSB" compact s0.ckpt L.log --to-seq "$seq" -o C.ckpt --rest-log C.log >/dev/null 2>&1 & p=$!
    sleep "0.$(printf %03d $((RANDOM % 250)))"
    kill -9 $p 2>/dev/null; wait $p 2>/dev/null
    if [ -e C.ckpt ] && [ -e C.log ]; then
      both=$((both + 1))
      got=$("$MMSB" replay --json C.ckpt C.log 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["state_hash"])')
      [ "$got" != "$want" ] && mismatched=$((mismatched + 1))
    elif [ -e C.ckpt ] || [ -e C.log ]; then unpaired=$((unpaired + 1))
    else neither=$((neither + 1)); fi
    "$MMSB" verify s0.ckpt L.log 2>/dev/null || mismatched=$((mismatched + 1))
    find . -maxdepth 1 -name '.*.mmsb-tmp' -exec rm -rf {} +
  done
  echo "kill-compact: $N trials: $unpaired unpaired outputs, $mismatched pairs or inputs wrong ($both published whole, $neither not at all)"
}

trial_full_disk() {
  local half=0 corrupt=0 refused=0 how
  if mkdir -p disk && mount -t tmpfs -o size=1M tmpfs disk 2>/dev/null; then how="tmpfs"; else how="file-size limit"; fi
  for t in $(seq "$N"); do
    if [ "$how" = tmpfs ]; then
      rm -rf disk/*; fresh_log; cp -r L.log disk/L.log
      # Fill the rest of the disk but a random amount, so the append runs out at a random point.
      head -c $((RANDOM * 20)) /dev/zero >disk/pad 2>/dev/null
      "$MMSB" diff s0.ckpt --a-log disk/L.log s2.ckpt --emit-log disk/L.log --append >/dev/null 2>&1 && continue
      refused=$((refused + 1)); LOGP=disk/L.log
    else
      fresh_log
      local size; size=$(du -b L.log/00000000.mmsblog | cut -f1)
      ( trap '' XFSZ; ulimit -f $(( (size + RANDOM * 40) / 1024 + 1 )); exec "$MMSB" diff s0.ckpt --a-log L.log s2.ckpt --emit-log L.log --append ) >/dev/null 2>&1 && continue
      refused=$((refused + 1)); LOGP=L.log
    fi
    "$MMSB" verify s0.ckpt "$LOGP" 2>/dev/null || { corrupt=$((corrupt + 1)); continue; }
    bytes_equal s0.ckpt "$LOGP" s1.ckpt || half=$((half + 1))
  done
  [ "$how" = tmpfs ] && umount disk
  echo "full-disk ($how): $N trials: $refused appends failed for space, $corrupt corrupt logs, $half half snapshots"
}

for t in "${TRIALS[@]}"; do
  case $t in
    appenders) trial_appenders ;;
    kill-append) trial_kill_append ;;
    kill-compact) trial_kill_compact ;;
    full-disk) trial_full_disk ;;
    *) echo "unknown trial $t" >&2; exit 2 ;;
  esac
done
