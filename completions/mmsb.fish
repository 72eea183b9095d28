# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_mmsb_global_optspecs
    string join \n wait metrics-file= h/help V/version
end

function __fish_mmsb_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_mmsb_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_mmsb_using_subcommand
    set -l cmd (__fish_mmsb_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c mmsb -n "__fish_mmsb_needs_command" -l metrics-file -d 'On exit, write the run\'s metrics to this file in the Prometheus text format (atomically: for node_exporter\'s textfile collector), whatever the outcome' -r -F
complete -c mmsb -n "__fish_mmsb_needs_command" -l wait -d 'When another mmsb process holds a log\'s write lock, wait for it instead of failing'
complete -c mmsb -n "__fish_mmsb_needs_command" -s h -l help -d 'Print help'
complete -c mmsb -n "__fish_mmsb_needs_command" -s V -l version -d 'Print version'
complete -c mmsb -n "__fish_mmsb_needs_command" -f -a "gen" -d 'Writes a synthetic checkpoint and log from a seed'
complete -c mmsb -n "__fish_mmsb_needs_command" -f -a "import" -d 'Imports a safetensors file as a checkpoint (one page per tensor)'
complete -c mmsb -n "__fish_mmsb_needs_command" -f -a "export" -d 'Exports a checkpoint (after replaying logs on it) as a safetensors file'
complete -c mmsb -n "__fish_mmsb_needs_command" -f -a "inspect" -d 'Shows what is inside checkpoints and logs'
complete -c mmsb -n "__fish_mmsb_needs_command" -f -a "verify" -d 'Checks every checksum, the structure, and that every delta applies. Quiet unless asked'
complete -c mmsb -n "__fish_mmsb_needs_command" -f -a "recover" -d 'Cuts a torn tail off a log, keeping a backup of the cut bytes. Never drops a whole record'
complete -c mmsb -n "__fish_mmsb_needs_command" -f -a "replay" -d 'Replays a checkpoint plus logs, prints the state hash and timings, optionally writes the result'
complete -c mmsb -n "__fish_mmsb_needs_command" -f -a "compact" -d 'Folds a log into a new checkpoint, or merges a log\'s deltas into fewer, smaller records'
complete -c mmsb -n "__fish_mmsb_needs_command" -f -a "diff" -d 'Shows what differs between two states; optionally writes the log that turns A into B'
complete -c mmsb -n "__fish_mmsb_needs_command" -f -a "stress" -d 'Soak test: rounds of gen, replay, verify, compact, diff, torn-tail recovery and corruption detection on small random states, checking that every path agrees on the state hash'
complete -c mmsb -n "__fish_mmsb_needs_command" -f -a "derive" -d 'Changes the dependency graph of a log (appending a graph record under its writer lock)'
complete -c mmsb -n "__fish_mmsb_needs_command" -f -a "propagate" -d 'Recomputes every derived page whose inputs changed since the last propagation in the log, and appends the outputs (changed bytes only) and a PROPAGATED record as one atomic group'
complete -c mmsb -n "__fish_mmsb_needs_command" -f -a "explain" -d 'Says which parent change, at which record, caused a page\'s last recomputation, back to the change from outside that started it'
complete -c mmsb -n "__fish_mmsb_needs_command" -f -a "watch" -d 'Follows a log that another process is appending to: records/s and bytes/s by record type, sequence and epoch, segments, compression, the pages written most, and the tail\'s health (how far checksums were checked, a torn record, the writer holding the lock). Reads as any reader does, so a writer never waits for it and it never shows half a record or group; after the first snapshot, a refresh reads only the segment that was last and any new ones. With --device, it also keeps a copy of the state on a CUDA device, applying each refresh\'s new records to it, and shows the pages resident and the device memory in use'
complete -c mmsb -n "__fish_mmsb_needs_command" -f -a "bench" -d 'In-process benchmarks (CUDA started once, then timed runs); JSON on stdout'
complete -c mmsb -n "__fish_mmsb_needs_command" -f -a "completions" -d 'Prints a shell completion script: bash, zsh, fish, powershell or elvish'
complete -c mmsb -n "__fish_mmsb_needs_command" -f -a "man-pages" -d 'Writes the man pages (mmsb.1 and one per subcommand) into a directory, and with --completions-out every shell\'s completion script into another (what a release ships)'
complete -c mmsb -n "__fish_mmsb_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mmsb -n "__fish_mmsb_using_subcommand gen" -s o -l output -d 'Checkpoint to write' -r -F
complete -c mmsb -n "__fish_mmsb_using_subcommand gen" -l log -d 'Log directory to write (default: the checkpoint\'s path with extension .log)' -r -F
complete -c mmsb -n "__fish_mmsb_using_subcommand gen" -l seed -d 'RNG seed: the same seed and options give the same bytes' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand gen" -l pages -d 'Number of pages (at most 100,000,000)' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand gen" -l total-size -d 'Total page bytes (suffixes K, M, G, KiB, MiB, GiB; at most 1 TiB)' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand gen" -l page-sizes -d 'Page-size distribution' -r -f -a "equal\t''
log-uniform\t''"
complete -c mmsb -n "__fish_mmsb_using_subcommand gen" -l deltas -d 'Records in the log (0: no log; at most 1,000,000,000)' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand gen" -l mix -d 'Weights of record kinds: full, sparse, masked, create, resize, delete, fill' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand gen" -l delta-bytes -d 'Bytes per sparse range, masked span or created page, as MIN..MAX (1 B to 1 GiB)' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand gen" -l max-ranges -d 'Most ranges in one sparse record (1 to 4096)' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand gen" -l full-max -d 'Largest page that full-page writes go to (others get sparse writes; at most 1 TiB)' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand gen" -l hot-fraction -d 'Fraction of pages that are hot (0 to 1)' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand gen" -l hot-weight -d 'Fraction of writes that go to hot pages (0 to 1)' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand gen" -l segment-size -d 'Log segment size (4 KiB to 1 TiB)' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand gen" -l compress -d 'Payload compression: none, auto, zstd or zstd:LEVEL' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand gen" -l graph -d 'Make the pages a graph of derived pages of this shape (pages of one size; the log then writes root pages only, and `mmsb propagate` brings the derived pages up to date)' -r -f -a "chain\t''
tree\t''
layered\t''
random\t''"
complete -c mmsb -n "__fish_mmsb_using_subcommand gen" -l fanout -d 'With --graph: children per page, for tree (1 to 1,000,000)' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand gen" -l levels -d 'With --graph: levels, for layered (1 to 1,000,000)' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand gen" -l parents -d 'With --graph: parents per derived page, for layered and random (1 to 64)' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand gen" -l rule -d 'With --graph: the rule of every derived page (copy, xor, add-u32, min-u32, max-u32, or slice:OFFSET,LEN; a rule must keep the page size)' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand gen" -l metrics-file -d 'On exit, write the run\'s metrics to this file in the Prometheus text format (atomically: for node_exporter\'s textfile collector), whatever the outcome' -r -F
complete -c mmsb -n "__fish_mmsb_using_subcommand gen" -l json -d 'Print a JSON summary on stdout'
complete -c mmsb -n "__fish_mmsb_using_subcommand gen" -l wait -d 'When another mmsb process holds a log\'s write lock, wait for it instead of failing'
complete -c mmsb -n "__fish_mmsb_using_subcommand gen" -s h -l help -d 'Print help'
complete -c mmsb -n "__fish_mmsb_using_subcommand import" -s o -l output -d 'Checkpoint to write' -r -F
complete -c mmsb -n "__fish_mmsb_using_subcommand import" -l epoch -d 'Every page\'s epoch: the training step the file is, so that the records `diff --append` makes from it carry the step and `replay --to-epoch STEP` restores it' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand import" -l metrics-file -d 'On exit, write the run\'s metrics to this file in the Prometheus text format (atomically: for node_exporter\'s textfile collector), whatever the outcome' -r -F
complete -c mmsb -n "__fish_mmsb_using_subcommand import" -l json -d 'Print a JSON summary on stdout'
complete -c mmsb -n "__fish_mmsb_using_subcommand import" -l wait -d 'When another mmsb process holds a log\'s write lock, wait for it instead of failing'
complete -c mmsb -n "__fish_mmsb_using_subcommand import" -s h -l help -d 'Print help'
complete -c mmsb -n "__fish_mmsb_using_subcommand export" -s o -l output -d 'safetensors file to write' -r -F
complete -c mmsb -n "__fish_mmsb_using_subcommand export" -l to-seq -d 'Replay records up to and including this sequence number' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand export" -l to-epoch -d 'Replay until the first record whose epoch is above this one' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand export" -l metrics-file -d 'On exit, write the run\'s metrics to this file in the Prometheus text format (atomically: for node_exporter\'s textfile collector), whatever the outcome' -r -F
complete -c mmsb -n "__fish_mmsb_using_subcommand export" -l json -d 'Print a JSON summary on stdout'
complete -c mmsb -n "__fish_mmsb_using_subcommand export" -l wait -d 'When another mmsb process holds a log\'s write lock, wait for it instead of failing'
complete -c mmsb -n "__fish_mmsb_using_subcommand export" -s h -l help -d 'Print help'
complete -c mmsb -n "__fish_mmsb_using_subcommand inspect" -l from-seq -d 'With --records: lowest sequence number' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand inspect" -l to-seq -d 'With --records: highest sequence number' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand inspect" -l page -d 'Only these pages (in a checkpoint\'s page list, and with --records, the records for them): an id (7), an id range (10-20) or a glob over names (\'model.layers.1?.*\'); repeatable. Names of a log\'s pages come from its CREATE records and from a checkpoint given with it' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand inspect" -l graph -d 'Print the dependency graph (of the checkpoint after its log) in this format instead' -r -f -a "dot\t''"
complete -c mmsb -n "__fish_mmsb_using_subcommand inspect" -l metrics-file -d 'On exit, write the run\'s metrics to this file in the Prometheus text format (atomically: for node_exporter\'s textfile collector), whatever the outcome' -r -F
complete -c mmsb -n "__fish_mmsb_using_subcommand inspect" -l records -d 'List log records'
complete -c mmsb -n "__fish_mmsb_using_subcommand inspect" -l json -d 'Print JSON on stdout'
complete -c mmsb -n "__fish_mmsb_using_subcommand inspect" -l wait -d 'When another mmsb process holds a log\'s write lock, wait for it instead of failing'
complete -c mmsb -n "__fish_mmsb_using_subcommand inspect" -s h -l help -d 'Print help'
complete -c mmsb -n "__fish_mmsb_using_subcommand verify" -l metrics-file -d 'On exit, write the run\'s metrics to this file in the Prometheus text format (atomically: for node_exporter\'s textfile collector), whatever the outcome' -r -F
complete -c mmsb -n "__fish_mmsb_using_subcommand verify" -l json -d 'Print a JSON report of every problem on stdout'
complete -c mmsb -n "__fish_mmsb_using_subcommand verify" -s v -l verbose -d 'Print a summary table even when all is well'
complete -c mmsb -n "__fish_mmsb_using_subcommand verify" -l repair -d 'If the only problem is a torn tail, cut it (as `mmsb recover` does)'
complete -c mmsb -n "__fish_mmsb_using_subcommand verify" -l rederive -d 'Also derive every derived page again by its built-in rule and check that its bytes (the logged outputs of the last propagation) match'
complete -c mmsb -n "__fish_mmsb_using_subcommand verify" -l wait -d 'When another mmsb process holds a log\'s write lock, wait for it instead of failing'
complete -c mmsb -n "__fish_mmsb_using_subcommand verify" -s h -l help -d 'Print help'
complete -c mmsb -n "__fish_mmsb_using_subcommand recover" -l backup -d 'Where to keep the cut bytes (default: beside the segment, SEGMENT.torn-OFFSET)' -r -F
complete -c mmsb -n "__fish_mmsb_using_subcommand recover" -l metrics-file -d 'On exit, write the run\'s metrics to this file in the Prometheus text format (atomically: for node_exporter\'s textfile collector), whatever the outcome' -r -F
complete -c mmsb -n "__fish_mmsb_using_subcommand recover" -l json -d 'Print JSON on stdout'
complete -c mmsb -n "__fish_mmsb_using_subcommand recover" -l wait -d 'When another mmsb process holds a log\'s write lock, wait for it instead of failing'
complete -c mmsb -n "__fish_mmsb_using_subcommand recover" -s h -l help -d 'Print help'
complete -c mmsb -n "__fish_mmsb_using_subcommand replay" -l device -d 'Where to replay: auto (cuda:0 when a GPU is there, else the CPU), cpu, cuda:N, or a list of devices (cuda:0,cuda:1) with --placement' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand replay" -l placement -d 'With several devices: shard (each page on one device, balanced by bytes) or replicate (every page on every device; the file is read once and copied device to device)' -r -f -a "shard\t''
replicate\t''"
complete -c mmsb -n "__fish_mmsb_using_subcommand replay" -l memory -d 'GPU memory for the pages: device, unified or host-mapped' -r -f -a "device\t''
unified\t''
host-mapped\t''"
complete -c mmsb -n "__fish_mmsb_using_subcommand replay" -l pages -d 'Replay only these pages: an id (7), an id range (10-20) or a glob over names (\'model.layers.1?.*\'); repeatable. The hash and -o cover the selected pages. A GPU loads only them and applies only their deltas; the CPU replays the whole log (every record is still checked) and keeps them' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand replay" -l read -d 'GPU: how to read the checkpoint (default: from the page cache when the file is cached, else with O_DIRECT)' -r -f -a "buffered\t''
pin-mapping\t''
direct\t''"
complete -c mmsb -n "__fish_mmsb_using_subcommand replay" -l to-seq -d 'Replay records up to and including this sequence number' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand replay" -l to-epoch -d 'Replay until the first record whose epoch is above this one' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand replay" -s o -l output -d 'Write the replayed state as a checkpoint' -r -F
complete -c mmsb -n "__fish_mmsb_using_subcommand replay" -l metrics-file -d 'On exit, write the run\'s metrics to this file in the Prometheus text format (atomically: for node_exporter\'s textfile collector), whatever the outcome' -r -F
complete -c mmsb -n "__fish_mmsb_using_subcommand replay" -l verify -d 'GPU: check the bytes on the device against the checkpoint\'s CRC32C and compute the state hash on the GPU. (The CPU replay always checks, and always prints the hash.)'
complete -c mmsb -n "__fish_mmsb_using_subcommand replay" -l json -d 'Print JSON on stdout'
complete -c mmsb -n "__fish_mmsb_using_subcommand replay" -l wait -d 'When another mmsb process holds a log\'s write lock, wait for it instead of failing'
complete -c mmsb -n "__fish_mmsb_using_subcommand replay" -s h -l help -d 'Print help'
complete -c mmsb -n "__fish_mmsb_using_subcommand compact" -s o -l output -d 'Output: the new checkpoint (with --log-only: the new log directory)' -r -F
complete -c mmsb -n "__fish_mmsb_using_subcommand compact" -l to-seq -d 'Fold (or merge) only records up to this sequence number; later records are copied into the output log unchanged' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand compact" -l rest-log -d 'Log directory for the records after --to-seq, against the new checkpoint (default: the output\'s path with extension .log)' -r -F
complete -c mmsb -n "__fish_mmsb_using_subcommand compact" -l compress -d 'Payload compression of the records written: auto (zstd where it saves 1/32), zstd, zstd:LEVEL or none' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand compact" -l metrics-file -d 'On exit, write the run\'s metrics to this file in the Prometheus text format (atomically: for node_exporter\'s textfile collector), whatever the outcome' -r -F
complete -c mmsb -n "__fish_mmsb_using_subcommand compact" -l log-only -d 'Merge the log\'s deltas without reading or writing a checkpoint'
complete -c mmsb -n "__fish_mmsb_using_subcommand compact" -l json -d 'Print JSON on stdout'
complete -c mmsb -n "__fish_mmsb_using_subcommand compact" -l wait -d 'When another mmsb process holds a log\'s write lock, wait for it instead of failing'
complete -c mmsb -n "__fish_mmsb_using_subcommand compact" -s h -l help -d 'Print help'
complete -c mmsb -n "__fish_mmsb_using_subcommand diff" -l a-log -d 'A log segment or directory replayed onto A (repeatable)' -r -F
complete -c mmsb -n "__fish_mmsb_using_subcommand diff" -l b-log -d 'A log segment or directory replayed onto B (repeatable)' -r -F
complete -c mmsb -n "__fish_mmsb_using_subcommand diff" -l a-to-seq -d 'Replay A\'s log up to this sequence number' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand diff" -l b-to-seq -d 'Replay B\'s log up to this sequence number' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand diff" -l ranges -d 'Differing ranges listed per page (0 to 10,000)' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand diff" -l emit-log -d 'Write the smallest log that turns A into B, as a new log directory against A\'s state' -r -F
complete -c mmsb -n "__fish_mmsb_using_subcommand diff" -l compress -d 'With --emit-log: payload compression (auto, zstd, zstd:LEVEL or none)' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand diff" -l metrics-file -d 'On exit, write the run\'s metrics to this file in the Prometheus text format (atomically: for node_exporter\'s textfile collector), whatever the outcome' -r -F
complete -c mmsb -n "__fish_mmsb_using_subcommand diff" -l stat -d 'One line per differing page'
complete -c mmsb -n "__fish_mmsb_using_subcommand diff" -s q -l quiet -d 'Print nothing: the exit status says whether the states differ'
complete -c mmsb -n "__fish_mmsb_using_subcommand diff" -l json -d 'Print JSON on stdout'
complete -c mmsb -n "__fish_mmsb_using_subcommand diff" -l append -d 'With --emit-log: add the records to the end of A\'s log (the one --a-log, replayed whole) instead of a new log, so a series of snapshots becomes one checkpoint and one log'
complete -c mmsb -n "__fish_mmsb_using_subcommand diff" -l bytes-only -d 'Compare bytes, lengths and metadata only: states that differ only in page epochs (and so in state hash) count as identical for the exit status'
complete -c mmsb -n "__fish_mmsb_using_subcommand diff" -l wait -d 'When another mmsb process holds a log\'s write lock, wait for it instead of failing'
complete -c mmsb -n "__fish_mmsb_using_subcommand diff" -s h -l help -d 'Print help'
complete -c mmsb -n "__fish_mmsb_using_subcommand stress" -l duration -d 'How long to run (s, m, h or ms suffix; more than 0, at most 7 days)' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand stress" -l seed -d 'Seed of the first round (default: from the clock; printed either way)' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand stress" -l dir -d 'Directory for the rounds\' files (default: the system\'s temporary directory)' -r -F
complete -c mmsb -n "__fish_mmsb_using_subcommand stress" -l metrics-file -d 'On exit, write the run\'s metrics to this file in the Prometheus text format (atomically: for node_exporter\'s textfile collector), whatever the outcome' -r -F
complete -c mmsb -n "__fish_mmsb_using_subcommand stress" -l json -d 'Print JSON on stdout'
complete -c mmsb -n "__fish_mmsb_using_subcommand stress" -l wait -d 'When another mmsb process holds a log\'s write lock, wait for it instead of failing'
complete -c mmsb -n "__fish_mmsb_using_subcommand stress" -s h -l help -d 'Print help'
complete -c mmsb -n "__fish_mmsb_using_subcommand derive; and not __fish_seen_subcommand_from set clear help" -l metrics-file -d 'On exit, write the run\'s metrics to this file in the Prometheus text format (atomically: for node_exporter\'s textfile collector), whatever the outcome' -r -F
complete -c mmsb -n "__fish_mmsb_using_subcommand derive; and not __fish_seen_subcommand_from set clear help" -l wait -d 'When another mmsb process holds a log\'s write lock, wait for it instead of failing'
complete -c mmsb -n "__fish_mmsb_using_subcommand derive; and not __fish_seen_subcommand_from set clear help" -s h -l help -d 'Print help'
complete -c mmsb -n "__fish_mmsb_using_subcommand derive; and not __fish_seen_subcommand_from set clear help" -f -a "set" -d 'Makes a page derive from parent pages by a rule (replacing any rule it had)'
complete -c mmsb -n "__fish_mmsb_using_subcommand derive; and not __fish_seen_subcommand_from set clear help" -f -a "clear" -d 'Makes a derived page a root again (its bytes stay as they are)'
complete -c mmsb -n "__fish_mmsb_using_subcommand derive; and not __fish_seen_subcommand_from set clear help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mmsb -n "__fish_mmsb_using_subcommand derive; and __fish_seen_subcommand_from set" -l page -d 'The derived page' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand derive; and __fish_seen_subcommand_from set" -l rule -d 'The rule (or slice:OFFSET,LEN)' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand derive; and __fish_seen_subcommand_from set" -l parents -d 'Parent pages, in order, comma-separated' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand derive; and __fish_seen_subcommand_from set" -l params -d 'The rule\'s parameters, comma-separated (slice: OFFSET,LEN)' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand derive; and __fish_seen_subcommand_from set" -l metrics-file -d 'On exit, write the run\'s metrics to this file in the Prometheus text format (atomically: for node_exporter\'s textfile collector), whatever the outcome' -r -F
complete -c mmsb -n "__fish_mmsb_using_subcommand derive; and __fish_seen_subcommand_from set" -l json -d 'Print JSON on stdout'
complete -c mmsb -n "__fish_mmsb_using_subcommand derive; and __fish_seen_subcommand_from set" -l wait -d 'When another mmsb process holds a log\'s write lock, wait for it instead of failing'
complete -c mmsb -n "__fish_mmsb_using_subcommand derive; and __fish_seen_subcommand_from set" -s h -l help -d 'Print help'
complete -c mmsb -n "__fish_mmsb_using_subcommand derive; and __fish_seen_subcommand_from clear" -l page -d 'The page' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand derive; and __fish_seen_subcommand_from clear" -l metrics-file -d 'On exit, write the run\'s metrics to this file in the Prometheus text format (atomically: for node_exporter\'s textfile collector), whatever the outcome' -r -F
complete -c mmsb -n "__fish_mmsb_using_subcommand derive; and __fish_seen_subcommand_from clear" -l json -d 'Print JSON on stdout'
complete -c mmsb -n "__fish_mmsb_using_subcommand derive; and __fish_seen_subcommand_from clear" -l wait -d 'When another mmsb process holds a log\'s write lock, wait for it instead of failing'
complete -c mmsb -n "__fish_mmsb_using_subcommand derive; and __fish_seen_subcommand_from clear" -s h -l help -d 'Print help'
complete -c mmsb -n "__fish_mmsb_using_subcommand derive; and __fish_seen_subcommand_from help" -f -a "set" -d 'Makes a page derive from parent pages by a rule (replacing any rule it had)'
complete -c mmsb -n "__fish_mmsb_using_subcommand derive; and __fish_seen_subcommand_from help" -f -a "clear" -d 'Makes a derived page a root again (its bytes stay as they are)'
complete -c mmsb -n "__fish_mmsb_using_subcommand derive; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mmsb -n "__fish_mmsb_using_subcommand propagate" -l metrics-file -d 'On exit, write the run\'s metrics to this file in the Prometheus text format (atomically: for node_exporter\'s textfile collector), whatever the outcome' -r -F
complete -c mmsb -n "__fish_mmsb_using_subcommand propagate" -l dry-run -d 'Write nothing; list the pages it would start from and may recompute'
complete -c mmsb -n "__fish_mmsb_using_subcommand propagate" -l json -d 'Print JSON on stdout'
complete -c mmsb -n "__fish_mmsb_using_subcommand propagate" -l wait -d 'When another mmsb process holds a log\'s write lock, wait for it instead of failing'
complete -c mmsb -n "__fish_mmsb_using_subcommand propagate" -s h -l help -d 'Print help'
complete -c mmsb -n "__fish_mmsb_using_subcommand explain" -l seq -d 'Only records up to this sequence number' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand explain" -l metrics-file -d 'On exit, write the run\'s metrics to this file in the Prometheus text format (atomically: for node_exporter\'s textfile collector), whatever the outcome' -r -F
complete -c mmsb -n "__fish_mmsb_using_subcommand explain" -l json -d 'Print JSON on stdout'
complete -c mmsb -n "__fish_mmsb_using_subcommand explain" -l wait -d 'When another mmsb process holds a log\'s write lock, wait for it instead of failing'
complete -c mmsb -n "__fish_mmsb_using_subcommand explain" -s h -l help -d 'Print help'
complete -c mmsb -n "__fish_mmsb_using_subcommand watch" -l interval -d 'Time between refreshes (e.g. 500ms, 2s)' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand watch" -l top -d 'Pages listed among those written most' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand watch" -l device -d 'Replay the checkpoint and the log onto this CUDA device (cuda:N) and apply the new records to that copy at each refresh; a record that creates, deletes or resizes a page stops the copy (exit 2)' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand watch" -l metrics-file -d 'On exit, write the run\'s metrics to this file in the Prometheus text format (atomically: for node_exporter\'s textfile collector), whatever the outcome' -r -F
complete -c mmsb -n "__fish_mmsb_using_subcommand watch" -l once -d 'Print one snapshot and exit'
complete -c mmsb -n "__fish_mmsb_using_subcommand watch" -l json -d 'Print JSON on stdout: one document with --once, else one per line at each refresh'
complete -c mmsb -n "__fish_mmsb_using_subcommand watch" -l wait -d 'When another mmsb process holds a log\'s write lock, wait for it instead of failing'
complete -c mmsb -n "__fish_mmsb_using_subcommand watch" -s h -l help -d 'Print help'
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and not __fish_seen_subcommand_from load deltas propagation help" -l metrics-file -d 'On exit, write the run\'s metrics to this file in the Prometheus text format (atomically: for node_exporter\'s textfile collector), whatever the outcome' -r -F
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and not __fish_seen_subcommand_from load deltas propagation help" -l wait -d 'When another mmsb process holds a log\'s write lock, wait for it instead of failing'
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and not __fish_seen_subcommand_from load deltas propagation help" -s h -l help -d 'Print help'
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and not __fish_seen_subcommand_from load deltas propagation help" -f -a "load" -d 'Times loading a checkpoint into GPU memory: file open to the last byte on the device'
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and not __fish_seen_subcommand_from load deltas propagation help" -f -a "deltas" -d 'Times applying a log to a resident checkpoint: log open to applied and synchronised'
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and not __fish_seen_subcommand_from load deltas propagation help" -f -a "propagation" -d 'Streams updates through a generated graph of derived pages: the propagation engine against the naive engine and a full sweep, on the same graph and updates'
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and not __fish_seen_subcommand_from load deltas propagation help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and __fish_seen_subcommand_from load" -l device -d 'The device' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and __fish_seen_subcommand_from load" -l runs -d 'Timed runs (the median is reported; 1 to 1000)' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and __fish_seen_subcommand_from load" -l read -d 'How to read the file (default: by page-cache residency)' -r -f -a "buffered\t''
pin-mapping\t''
direct\t''"
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and __fish_seen_subcommand_from load" -l threads -d 'Staging threads (tuning; default: chosen by size and read mode; 1 to 256)' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and __fish_seen_subcommand_from load" -l slot -d 'Staging slot size (tuning; with --threads; 4 KiB to 1 GiB)' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and __fish_seen_subcommand_from load" -l metrics-file -d 'On exit, write the run\'s metrics to this file in the Prometheus text format (atomically: for node_exporter\'s textfile collector), whatever the outcome' -r -F
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and __fish_seen_subcommand_from load" -l cold -d 'Drop the file from the page cache before each run'
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and __fish_seen_subcommand_from load" -l wait -d 'When another mmsb process holds a log\'s write lock, wait for it instead of failing'
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and __fish_seen_subcommand_from load" -s h -l help -d 'Print help'
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and __fish_seen_subcommand_from deltas" -l device -d 'The device' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and __fish_seen_subcommand_from deltas" -l runs -d 'Timed runs (the median is reported; 1 to 1000)' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and __fish_seen_subcommand_from deltas" -l metrics-file -d 'On exit, write the run\'s metrics to this file in the Prometheus text format (atomically: for node_exporter\'s textfile collector), whatever the outcome' -r -F
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and __fish_seen_subcommand_from deltas" -l wait -d 'When another mmsb process holds a log\'s write lock, wait for it instead of failing'
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and __fish_seen_subcommand_from deltas" -s h -l help -d 'Print help'
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and __fish_seen_subcommand_from propagation" -l pages -d 'Pages in the graph (2 to 100,000,000)' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and __fish_seen_subcommand_from propagation" -l shape -d 'The graph\'s shape' -r -f -a "chain\t''
tree\t''
layered\t''
random\t''"
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and __fish_seen_subcommand_from propagation" -l fanout -d 'Children per page, for --shape tree (1 to 1,000,000)' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and __fish_seen_subcommand_from propagation" -l levels -d 'Levels, for --shape layered (1 to 1,000,000)' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and __fish_seen_subcommand_from propagation" -l parents -d 'Parents per derived page, for --shape layered and random (1 to 64)' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and __fish_seen_subcommand_from propagation" -l updates -d 'Root updates in all (1 to 1,000,000,000)' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and __fish_seen_subcommand_from propagation" -l batch -d 'Updates per flush (1 to 1,000,000,000)' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and __fish_seen_subcommand_from propagation" -l page-size -d 'Bytes per page (1 B to 1 MiB)' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and __fish_seen_subcommand_from propagation" -l locality -d 'Share of updates (0 to 1) that go to a hot set of 1% of the roots, the rest to any root: more duplicates in a batch, more overlap between the updates\' cones' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and __fish_seen_subcommand_from propagation" -l seed -d 'Seed of the graph and the updates' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and __fish_seen_subcommand_from propagation" -l baseline-seconds -d 'The most seconds each baseline runs' -r
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and __fish_seen_subcommand_from propagation" -l metrics-file -d 'On exit, write the run\'s metrics to this file in the Prometheus text format (atomically: for node_exporter\'s textfile collector), whatever the outcome' -r -F
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and __fish_seen_subcommand_from propagation" -l json -d 'Print JSON on stdout'
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and __fish_seen_subcommand_from propagation" -l wait -d 'When another mmsb process holds a log\'s write lock, wait for it instead of failing'
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and __fish_seen_subcommand_from propagation" -s h -l help -d 'Print help'
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and __fish_seen_subcommand_from help" -f -a "load" -d 'Times loading a checkpoint into GPU memory: file open to the last byte on the device'
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and __fish_seen_subcommand_from help" -f -a "deltas" -d 'Times applying a log to a resident checkpoint: log open to applied and synchronised'
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and __fish_seen_subcommand_from help" -f -a "propagation" -d 'Streams updates through a generated graph of derived pages: the propagation engine against the naive engine and a full sweep, on the same graph and updates'
complete -c mmsb -n "__fish_mmsb_using_subcommand bench; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mmsb -n "__fish_mmsb_using_subcommand completions" -l metrics-file -d 'On exit, write the run\'s metrics to this file in the Prometheus text format (atomically: for node_exporter\'s textfile collector), whatever the outcome' -r -F
complete -c mmsb -n "__fish_mmsb_using_subcommand completions" -l wait -d 'When another mmsb process holds a log\'s write lock, wait for it instead of failing'
complete -c mmsb -n "__fish_mmsb_using_subcommand completions" -s h -l help -d 'Print help'
complete -c mmsb -n "__fish_mmsb_using_subcommand man-pages" -l out -d 'Output directory' -r -F
complete -c mmsb -n "__fish_mmsb_using_subcommand man-pages" -l completions-out -d 'Directory for the completion scripts' -r -F
complete -c mmsb -n "__fish_mmsb_using_subcommand man-pages" -l metrics-file -d 'On exit, write the run\'s metrics to this file in the Prometheus text format (atomically: for node_exporter\'s textfile collector), whatever the outcome' -r -F
complete -c mmsb -n "__fish_mmsb_using_subcommand man-pages" -l wait -d 'When another mmsb process holds a log\'s write lock, wait for it instead of failing'
complete -c mmsb -n "__fish_mmsb_using_subcommand man-pages" -s h -l help -d 'Print help'
complete -c mmsb -n "__fish_mmsb_using_subcommand help; and not __fish_seen_subcommand_from gen import export inspect verify recover replay compact diff stress derive propagate explain watch bench completions man-pages help" -f -a "gen" -d 'Writes a synthetic checkpoint and log from a seed'
complete -c mmsb -n "__fish_mmsb_using_subcommand help; and not __fish_seen_subcommand_from gen import export inspect verify recover replay compact diff stress derive propagate explain watch bench completions man-pages help" -f -a "import" -d 'Imports a safetensors file as a checkpoint (one page per tensor)'
complete -c mmsb -n "__fish_mmsb_using_subcommand help; and not __fish_seen_subcommand_from gen import export inspect verify recover replay compact diff stress derive propagate explain watch bench completions man-pages help" -f -a "export" -d 'Exports a checkpoint (after replaying logs on it) as a safetensors file'
complete -c mmsb -n "__fish_mmsb_using_subcommand help; and not __fish_seen_subcommand_from gen import export inspect verify recover replay compact diff stress derive propagate explain watch bench completions man-pages help" -f -a "inspect" -d 'Shows what is inside checkpoints and logs'
complete -c mmsb -n "__fish_mmsb_using_subcommand help; and not __fish_seen_subcommand_from gen import export inspect verify recover replay compact diff stress derive propagate explain watch bench completions man-pages help" -f -a "verify" -d 'Checks every checksum, the structure, and that every delta applies. Quiet unless asked'
complete -c mmsb -n "__fish_mmsb_using_subcommand help; and not __fish_seen_subcommand_from gen import export inspect verify recover replay compact diff stress derive propagate explain watch bench completions man-pages help" -f -a "recover" -d 'Cuts a torn tail off a log, keeping a backup of the cut bytes. Never drops a whole record'
complete -c mmsb -n "__fish_mmsb_using_subcommand help; and not __fish_seen_subcommand_from gen import export inspect verify recover replay compact diff stress derive propagate explain watch bench completions man-pages help" -f -a "replay" -d 'Replays a checkpoint plus logs, prints the state hash and timings, optionally writes the result'
complete -c mmsb -n "__fish_mmsb_using_subcommand help; and not __fish_seen_subcommand_from gen import export inspect verify recover replay compact diff stress derive propagate explain watch bench completions man-pages help" -f -a "compact" -d 'Folds a log into a new checkpoint, or merges a log\'s deltas into fewer, smaller records'
complete -c mmsb -n "__fish_mmsb_using_subcommand help; and not __fish_seen_subcommand_from gen import export inspect verify recover replay compact diff stress derive propagate explain watch bench completions man-pages help" -f -a "diff" -d 'Shows what differs between two states; optionally writes the log that turns A into B'
complete -c mmsb -n "__fish_mmsb_using_subcommand help; and not __fish_seen_subcommand_from gen import export inspect verify recover replay compact diff stress derive propagate explain watch bench completions man-pages help" -f -a "stress" -d 'Soak test: rounds of gen, replay, verify, compact, diff, torn-tail recovery and corruption detection on small random states, checking that every path agrees on the state hash'
complete -c mmsb -n "__fish_mmsb_using_subcommand help; and not __fish_seen_subcommand_from gen import export inspect verify recover replay compact diff stress derive propagate explain watch bench completions man-pages help" -f -a "derive" -d 'Changes the dependency graph of a log (appending a graph record under its writer lock)'
complete -c mmsb -n "__fish_mmsb_using_subcommand help; and not __fish_seen_subcommand_from gen import export inspect verify recover replay compact diff stress derive propagate explain watch bench completions man-pages help" -f -a "propagate" -d 'Recomputes every derived page whose inputs changed since the last propagation in the log, and appends the outputs (changed bytes only) and a PROPAGATED record as one atomic group'
complete -c mmsb -n "__fish_mmsb_using_subcommand help; and not __fish_seen_subcommand_from gen import export inspect verify recover replay compact diff stress derive propagate explain watch bench completions man-pages help" -f -a "explain" -d 'Says which parent change, at which record, caused a page\'s last recomputation, back to the change from outside that started it'
complete -c mmsb -n "__fish_mmsb_using_subcommand help; and not __fish_seen_subcommand_from gen import export inspect verify recover replay compact diff stress derive propagate explain watch bench completions man-pages help" -f -a "watch" -d 'Follows a log that another process is appending to: records/s and bytes/s by record type, sequence and epoch, segments, compression, the pages written most, and the tail\'s health (how far checksums were checked, a torn record, the writer holding the lock). Reads as any reader does, so a writer never waits for it and it never shows half a record or group; after the first snapshot, a refresh reads only the segment that was last and any new ones. With --device, it also keeps a copy of the state on a CUDA device, applying each refresh\'s new records to it, and shows the pages resident and the device memory in use'
complete -c mmsb -n "__fish_mmsb_using_subcommand help; and not __fish_seen_subcommand_from gen import export inspect verify recover replay compact diff stress derive propagate explain watch bench completions man-pages help" -f -a "bench" -d 'In-process benchmarks (CUDA started once, then timed runs); JSON on stdout'
complete -c mmsb -n "__fish_mmsb_using_subcommand help; and not __fish_seen_subcommand_from gen import export inspect verify recover replay compact diff stress derive propagate explain watch bench completions man-pages help" -f -a "completions" -d 'Prints a shell completion script: bash, zsh, fish, powershell or elvish'
complete -c mmsb -n "__fish_mmsb_using_subcommand help; and not __fish_seen_subcommand_from gen import export inspect verify recover replay compact diff stress derive propagate explain watch bench completions man-pages help" -f -a "man-pages" -d 'Writes the man pages (mmsb.1 and one per subcommand) into a directory, and with --completions-out every shell\'s completion script into another (what a release ships)'
complete -c mmsb -n "__fish_mmsb_using_subcommand help; and not __fish_seen_subcommand_from gen import export inspect verify recover replay compact diff stress derive propagate explain watch bench completions man-pages help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mmsb -n "__fish_mmsb_using_subcommand help; and __fish_seen_subcommand_from derive" -f -a "set" -d 'Makes a page derive from parent pages by a rule (replacing any rule it had)'
complete -c mmsb -n "__fish_mmsb_using_subcommand help; and __fish_seen_subcommand_from derive" -f -a "clear" -d 'Makes a derived page a root again (its bytes stay as they are)'
complete -c mmsb -n "__fish_mmsb_using_subcommand help; and __fish_seen_subcommand_from bench" -f -a "load" -d 'Times loading a checkpoint into GPU memory: file open to the last byte on the device'
complete -c mmsb -n "__fish_mmsb_using_subcommand help; and __fish_seen_subcommand_from bench" -f -a "deltas" -d 'Times applying a log to a resident checkpoint: log open to applied and synchronised'
complete -c mmsb -n "__fish_mmsb_using_subcommand help; and __fish_seen_subcommand_from bench" -f -a "propagation" -d 'Streams updates through a generated graph of derived pages: the propagation engine against the naive engine and a full sweep, on the same graph and updates'
