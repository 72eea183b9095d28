
use builtin;
use str;

set edit:completion:arg-completer[mmsb] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'mmsb'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'mmsb'= {
            cand --metrics-file 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome'
            cand --wait 'When another mmsb process holds a log''s write lock, wait for it instead of failing'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand gen 'Writes a synthetic checkpoint and log from a seed'
            cand import 'Imports a safetensors file as a checkpoint (one page per tensor)'
            cand export 'Exports a checkpoint (after replaying logs on it) as a safetensors file'
            cand inspect 'Shows what is inside checkpoints and logs'
            cand verify 'Checks every checksum, the structure, and that every delta applies. Quiet unless asked'
            cand recover 'Cuts a torn tail off a log, keeping a backup of the cut bytes. Never drops a whole record'
            cand replay 'Replays a checkpoint plus logs, prints the state hash and timings, optionally writes the result'
            cand compact 'Folds a log into a new checkpoint, or merges a log''s deltas into fewer, smaller records'
            cand diff 'Shows what differs between two states; optionally writes the log that turns A into B'
            cand stress 'Soak test: rounds of gen, replay, verify, compact, diff, torn-tail recovery and corruption detection on small random states, checking that every path agrees on the state hash'
            cand derive 'Changes the dependency graph of a log (appending a graph record under its writer lock)'
            cand propagate 'Recomputes every derived page whose inputs changed since the last propagation in the log, and appends the outputs (changed bytes only) and a PROPAGATED record as one atomic group'
            cand explain 'Says which parent change, at which record, caused a page''s last recomputation, back to the change from outside that started it'
            cand watch 'Follows a log that another process is appending to: records/s and bytes/s by record type, sequence and epoch, segments, compression, the pages written most, and the tail''s health (how far checksums were checked, a torn record, the writer holding the lock). Reads as any reader does, so a writer never waits for it and it never shows half a record or group; after the first snapshot, a refresh reads only the segment that was last and any new ones. With --device, it also keeps a copy of the state on a CUDA device, applying each refresh''s new records to it, and shows the pages resident and the device memory in use'
            cand bench 'In-process benchmarks (CUDA started once, then timed runs); JSON on stdout'
            cand completions 'Prints a shell completion script: bash, zsh, fish, powershell or elvish'
            cand man-pages 'Writes the man pages (mmsb.1 and one per subcommand) into a directory, and with --completions-out every shell''s completion script into another (what a release ships)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'mmsb;gen'= {
            cand -o 'Checkpoint to write'
            cand --output 'Checkpoint to write'
            cand --log 'Log directory to write (default: the checkpoint''s path with extension .log)'
            cand --seed 'RNG seed: the same seed and options give the same bytes'
            cand --pages 'Number of pages (at most 100,000,000)'
            cand --total-size 'Total page bytes (suffixes K, M, G, KiB, MiB, GiB; at most 1 TiB)'
            cand --page-sizes 'Page-size distribution'
            cand --deltas 'Records in the log (0: no log; at most 1,000,000,000)'
            cand --mix 'Weights of record kinds: full, sparse, masked, create, resize, delete, fill'
            cand --delta-bytes 'Bytes per sparse range, masked span or created page, as MIN..MAX (1 B to 1 GiB)'
            cand --max-ranges 'Most ranges in one sparse record (1 to 4096)'
            cand --full-max 'Largest page that full-page writes go to (others get sparse writes; at most 1 TiB)'
            cand --hot-fraction 'Fraction of pages that are hot (0 to 1)'
            cand --hot-weight 'Fraction of writes that go to hot pages (0 to 1)'
            cand --segment-size 'Log segment size (4 KiB to 1 TiB)'
            cand --compress 'Payload compression: none, auto, zstd or zstd:LEVEL'
            cand --graph 'Make the pages a graph of derived pages of this shape (pages of one size; the log then writes root pages only, and `mmsb propagate` brings the derived pages up to date)'
            cand --fanout 'With --graph: children per page, for tree (1 to 1,000,000)'
            cand --levels 'With --graph: levels, for layered (1 to 1,000,000)'
            cand --parents 'With --graph: parents per derived page, for layered and random (1 to 64)'
            cand --rule 'With --graph: the rule of every derived page (copy, xor, add-u32, min-u32, max-u32, or slice:OFFSET,LEN; a rule must keep the page size)'
            cand --metrics-file 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome'
            cand --json 'Print a JSON summary on stdout'
            cand --wait 'When another mmsb process holds a log''s write lock, wait for it instead of failing'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'mmsb;import'= {
            cand -o 'Checkpoint to write'
            cand --output 'Checkpoint to write'
            cand --epoch 'Every page''s epoch: the training step the file is, so that the records `diff --append` makes from it carry the step and `replay --to-epoch STEP` restores it'
            cand --metrics-file 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome'
            cand --json 'Print a JSON summary on stdout'
            cand --wait 'When another mmsb process holds a log''s write lock, wait for it instead of failing'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'mmsb;export'= {
            cand -o 'safetensors file to write'
            cand --output 'safetensors file to write'
            cand --to-seq 'Replay records up to and including this sequence number'
            cand --to-epoch 'Replay until the first record whose epoch is above this one'
            cand --metrics-file 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome'
            cand --json 'Print a JSON summary on stdout'
            cand --wait 'When another mmsb process holds a log''s write lock, wait for it instead of failing'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'mmsb;inspect'= {
            cand --from-seq 'With --records: lowest sequence number'
            cand --to-seq 'With --records: highest sequence number'
            cand --page 'Only these pages (in a checkpoint''s page list, and with --records, the records for them): an id (7), an id range (10-20) or a glob over names (''model.layers.1?.*''); repeatable. Names of a log''s pages come from its CREATE records and from a checkpoint given with it'
            cand --graph 'Print the dependency graph (of the checkpoint after its log) in this format instead'
            cand --metrics-file 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome'
            cand --records 'List log records'
            cand --json 'Print JSON on stdout'
            cand --wait 'When another mmsb process holds a log''s write lock, wait for it instead of failing'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'mmsb;verify'= {
            cand --metrics-file 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome'
            cand --json 'Print a JSON report of every problem on stdout'
            cand -v 'Print a summary table even when all is well'
            cand --verbose 'Print a summary table even when all is well'
            cand --repair 'If the only problem is a torn tail, cut it (as `mmsb recover` does)'
            cand --rederive 'Also derive every derived page again by its built-in rule and check that its bytes (the logged outputs of the last propagation) match'
            cand --wait 'When another mmsb process holds a log''s write lock, wait for it instead of failing'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'mmsb;recover'= {
            cand --backup 'Where to keep the cut bytes (default: beside the segment, SEGMENT.torn-OFFSET)'
            cand --metrics-file 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome'
            cand --json 'Print JSON on stdout'
            cand --wait 'When another mmsb process holds a log''s write lock, wait for it instead of failing'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'mmsb;replay'= {
            cand --device 'Where to replay: auto (cuda:0 when a GPU is there, else the CPU), cpu, cuda:N, or a list of devices (cuda:0,cuda:1) with --placement'
            cand --placement 'With several devices: shard (each page on one device, balanced by bytes) or replicate (every page on every device; the file is read once and copied device to device)'
            cand --memory 'GPU memory for the pages: device, unified or host-mapped'
            cand --pages 'Replay only these pages: an id (7), an id range (10-20) or a glob over names (''model.layers.1?.*''); repeatable. The hash and -o cover the selected pages. A GPU loads only them and applies only their deltas; the CPU replays the whole log (every record is still checked) and keeps them'
            cand --read 'GPU: how to read the checkpoint (default: from the page cache when the file is cached, else with O_DIRECT)'
            cand --to-seq 'Replay records up to and including this sequence number'
            cand --to-epoch 'Replay until the first record whose epoch is above this one'
            cand -o 'Write the replayed state as a checkpoint'
            cand --output 'Write the replayed state as a checkpoint'
            cand --metrics-file 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome'
            cand --verify 'GPU: check the bytes on the device against the checkpoint''s CRC32C and compute the state hash on the GPU. (The CPU replay always checks, and always prints the hash.)'
            cand --json 'Print JSON on stdout'
            cand --wait 'When another mmsb process holds a log''s write lock, wait for it instead of failing'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'mmsb;compact'= {
            cand -o 'Output: the new checkpoint (with --log-only: the new log directory)'
            cand --output 'Output: the new checkpoint (with --log-only: the new log directory)'
            cand --to-seq 'Fold (or merge) only records up to this sequence number; later records are copied into the output log unchanged'
            cand --rest-log 'Log directory for the records after --to-seq, against the new checkpoint (default: the output''s path with extension .log)'
            cand --compress 'Payload compression of the records written: auto (zstd where it saves 1/32), zstd, zstd:LEVEL or none'
            cand --metrics-file 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome'
            cand --log-only 'Merge the log''s deltas without reading or writing a checkpoint'
            cand --json 'Print JSON on stdout'
            cand --wait 'When another mmsb process holds a log''s write lock, wait for it instead of failing'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'mmsb;diff'= {
            cand --a-log 'A log segment or directory replayed onto A (repeatable)'
            cand --b-log 'A log segment or directory replayed onto B (repeatable)'
            cand --a-to-seq 'Replay A''s log up to this sequence number'
            cand --b-to-seq 'Replay B''s log up to this sequence number'
            cand --ranges 'Differing ranges listed per page (0 to 10,000)'
            cand --emit-log 'Write the smallest log that turns A into B, as a new log directory against A''s state'
            cand --compress 'With --emit-log: payload compression (auto, zstd, zstd:LEVEL or none)'
            cand --metrics-file 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome'
            cand --stat 'One line per differing page'
            cand -q 'Print nothing: the exit status says whether the states differ'
            cand --quiet 'Print nothing: the exit status says whether the states differ'
            cand --json 'Print JSON on stdout'
            cand --append 'With --emit-log: add the records to the end of A''s log (the one --a-log, replayed whole) instead of a new log, so a series of snapshots becomes one checkpoint and one log'
            cand --bytes-only 'Compare bytes, lengths and metadata only: states that differ only in page epochs (and so in state hash) count as identical for the exit status'
            cand --wait 'When another mmsb process holds a log''s write lock, wait for it instead of failing'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'mmsb;stress'= {
            cand --duration 'How long to run (s, m, h or ms suffix; more than 0, at most 7 days)'
            cand --seed 'Seed of the first round (default: from the clock; printed either way)'
            cand --dir 'Directory for the rounds'' files (default: the system''s temporary directory)'
            cand --metrics-file 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome'
            cand --json 'Print JSON on stdout'
            cand --wait 'When another mmsb process holds a log''s write lock, wait for it instead of failing'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'mmsb;derive'= {
            cand --metrics-file 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome'
            cand --wait 'When another mmsb process holds a log''s write lock, wait for it instead of failing'
            cand -h 'Print help'
            cand --help 'Print help'
            cand set 'Makes a page derive from parent pages by a rule (replacing any rule it had)'
            cand clear 'Makes a derived page a root again (its bytes stay as they are)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'mmsb;derive;set'= {
            cand --page 'The derived page'
            cand --rule 'The rule (or slice:OFFSET,LEN)'
            cand --parents 'Parent pages, in order, comma-separated'
            cand --params 'The rule''s parameters, comma-separated (slice: OFFSET,LEN)'
            cand --metrics-file 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome'
            cand --json 'Print JSON on stdout'
            cand --wait 'When another mmsb process holds a log''s write lock, wait for it instead of failing'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'mmsb;derive;clear'= {
            cand --page 'The page'
            cand --metrics-file 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome'
            cand --json 'Print JSON on stdout'
            cand --wait 'When another mmsb process holds a log''s write lock, wait for it instead of failing'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'mmsb;derive;help'= {
            cand set 'Makes a page derive from parent pages by a rule (replacing any rule it had)'
            cand clear 'Makes a derived page a root again (its bytes stay as they are)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'mmsb;derive;help;set'= {
        }
        &'mmsb;derive;help;clear'= {
        }
        &'mmsb;derive;help;help'= {
        }
        &'mmsb;propagate'= {
            cand --metrics-file 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome'
            cand --dry-run 'Write nothing; list the pages it would start from and may recompute'
            cand --json 'Print JSON on stdout'
            cand --wait 'When another mmsb process holds a log''s write lock, wait for it instead of failing'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'mmsb;explain'= {
            cand --seq 'Only records up to this sequence number'
            cand --metrics-file 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome'
            cand --json 'Print JSON on stdout'
            cand --wait 'When another mmsb process holds a log''s write lock, wait for it instead of failing'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'mmsb;watch'= {
            cand --interval 'Time between refreshes (e.g. 500ms, 2s)'
            cand --top 'Pages listed among those written most'
            cand --device 'Replay the checkpoint and the log onto this CUDA device (cuda:N) and apply the new records to that copy at each refresh; a record that creates, deletes or resizes a page stops the copy (exit 2)'
            cand --metrics-file 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome'
            cand --once 'Print one snapshot and exit'
            cand --json 'Print JSON on stdout: one document with --once, else one per line at each refresh'
            cand --wait 'When another mmsb process holds a log''s write lock, wait for it instead of failing'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'mmsb;bench'= {
            cand --metrics-file 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome'
            cand --wait 'When another mmsb process holds a log''s write lock, wait for it instead of failing'
            cand -h 'Print help'
            cand --help 'Print help'
            cand load 'Times loading a checkpoint into GPU memory: file open to the last byte on the device'
            cand deltas 'Times applying a log to a resident checkpoint: log open to applied and synchronised'
            cand propagation 'Streams updates through a generated graph of derived pages: the propagation engine against the naive engine and a full sweep, on the same graph and updates'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'mmsb;bench;load'= {
            cand --device 'The device'
            cand --runs 'Timed runs (the median is reported; 1 to 1000)'
            cand --read 'How to read the file (default: by page-cache residency)'
            cand --threads 'Staging threads (tuning; default: chosen by size and read mode; 1 to 256)'
            cand --slot 'Staging slot size (tuning; with --threads; 4 KiB to 1 GiB)'
            cand --metrics-file 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome'
            cand --cold 'Drop the file from the page cache before each run'
            cand --wait 'When another mmsb process holds a log''s write lock, wait for it instead of failing'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'mmsb;bench;deltas'= {
            cand --device 'The device'
            cand --runs 'Timed runs (the median is reported; 1 to 1000)'
            cand --metrics-file 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome'
            cand --wait 'When another mmsb process holds a log''s write lock, wait for it instead of failing'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'mmsb;bench;propagation'= {
            cand --pages 'Pages in the graph (2 to 100,000,000)'
            cand --shape 'The graph''s shape'
            cand --fanout 'Children per page, for --shape tree (1 to 1,000,000)'
            cand --levels 'Levels, for --shape layered (1 to 1,000,000)'
            cand --parents 'Parents per derived page, for --shape layered and random (1 to 64)'
            cand --updates 'Root updates in all (1 to 1,000,000,000)'
            cand --batch 'Updates per flush (1 to 1,000,000,000)'
            cand --page-size 'Bytes per page (1 B to 1 MiB)'
            cand --locality 'Share of updates (0 to 1) that go to a hot set of 1% of the roots, the rest to any root: more duplicates in a batch, more overlap between the updates'' cones'
            cand --seed 'Seed of the graph and the updates'
            cand --baseline-seconds 'The most seconds each baseline runs'
            cand --metrics-file 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome'
            cand --json 'Print JSON on stdout'
            cand --wait 'When another mmsb process holds a log''s write lock, wait for it instead of failing'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'mmsb;bench;help'= {
            cand load 'Times loading a checkpoint into GPU memory: file open to the last byte on the device'
            cand deltas 'Times applying a log to a resident checkpoint: log open to applied and synchronised'
            cand propagation 'Streams updates through a generated graph of derived pages: the propagation engine against the naive engine and a full sweep, on the same graph and updates'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'mmsb;bench;help;load'= {
        }
        &'mmsb;bench;help;deltas'= {
        }
        &'mmsb;bench;help;propagation'= {
        }
        &'mmsb;bench;help;help'= {
        }
        &'mmsb;completions'= {
            cand --metrics-file 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome'
            cand --wait 'When another mmsb process holds a log''s write lock, wait for it instead of failing'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'mmsb;man-pages'= {
            cand --out 'Output directory'
            cand --completions-out 'Directory for the completion scripts'
            cand --metrics-file 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome'
            cand --wait 'When another mmsb process holds a log''s write lock, wait for it instead of failing'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'mmsb;help'= {
            cand gen 'Writes a synthetic checkpoint and log from a seed'
            cand import 'Imports a safetensors file as a checkpoint (one page per tensor)'
            cand export 'Exports a checkpoint (after replaying logs on it) as a safetensors file'
            cand inspect 'Shows what is inside checkpoints and logs'
            cand verify 'Checks every checksum, the structure, and that every delta applies. Quiet unless asked'
            cand recover 'Cuts a torn tail off a log, keeping a backup of the cut bytes. Never drops a whole record'
            cand replay 'Replays a checkpoint plus logs, prints the state hash and timings, optionally writes the result'
            cand compact 'Folds a log into a new checkpoint, or merges a log''s deltas into fewer, smaller records'
            cand diff 'Shows what differs between two states; optionally writes the log that turns A into B'
            cand stress 'Soak test: rounds of gen, replay, verify, compact, diff, torn-tail recovery and corruption detection on small random states, checking that every path agrees on the state hash'
            cand derive 'Changes the dependency graph of a log (appending a graph record under its writer lock)'
            cand propagate 'Recomputes every derived page whose inputs changed since the last propagation in the log, and appends the outputs (changed bytes only) and a PROPAGATED record as one atomic group'
            cand explain 'Says which parent change, at which record, caused a page''s last recomputation, back to the change from outside that started it'
            cand watch 'Follows a log that another process is appending to: records/s and bytes/s by record type, sequence and epoch, segments, compression, the pages written most, and the tail''s health (how far checksums were checked, a torn record, the writer holding the lock). Reads as any reader does, so a writer never waits for it and it never shows half a record or group; after the first snapshot, a refresh reads only the segment that was last and any new ones. With --device, it also keeps a copy of the state on a CUDA device, applying each refresh''s new records to it, and shows the pages resident and the device memory in use'
            cand bench 'In-process benchmarks (CUDA started once, then timed runs); JSON on stdout'
            cand completions 'Prints a shell completion script: bash, zsh, fish, powershell or elvish'
            cand man-pages 'Writes the man pages (mmsb.1 and one per subcommand) into a directory, and with --completions-out every shell''s completion script into another (what a release ships)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'mmsb;help;gen'= {
        }
        &'mmsb;help;import'= {
        }
        &'mmsb;help;export'= {
        }
        &'mmsb;help;inspect'= {
        }
        &'mmsb;help;verify'= {
        }
        &'mmsb;help;recover'= {
        }
        &'mmsb;help;replay'= {
        }
        &'mmsb;help;compact'= {
        }
        &'mmsb;help;diff'= {
        }
        &'mmsb;help;stress'= {
        }
        &'mmsb;help;derive'= {
            cand set 'Makes a page derive from parent pages by a rule (replacing any rule it had)'
            cand clear 'Makes a derived page a root again (its bytes stay as they are)'
        }
        &'mmsb;help;derive;set'= {
        }
        &'mmsb;help;derive;clear'= {
        }
        &'mmsb;help;propagate'= {
        }
        &'mmsb;help;explain'= {
        }
        &'mmsb;help;watch'= {
        }
        &'mmsb;help;bench'= {
            cand load 'Times loading a checkpoint into GPU memory: file open to the last byte on the device'
            cand deltas 'Times applying a log to a resident checkpoint: log open to applied and synchronised'
            cand propagation 'Streams updates through a generated graph of derived pages: the propagation engine against the naive engine and a full sweep, on the same graph and updates'
        }
        &'mmsb;help;bench;load'= {
        }
        &'mmsb;help;bench;deltas'= {
        }
        &'mmsb;help;bench;propagation'= {
        }
        &'mmsb;help;completions'= {
        }
        &'mmsb;help;man-pages'= {
        }
        &'mmsb;help;help'= {
        }
    ]
    $completions[$command]
}
