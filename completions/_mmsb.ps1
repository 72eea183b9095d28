
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'mmsb' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'mmsb'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'mmsb' {
            [CompletionResult]::new('--metrics-file', '--metrics-file', [CompletionResultType]::ParameterName, 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'When another mmsb process holds a log''s write lock, wait for it instead of failing')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('gen', 'gen', [CompletionResultType]::ParameterValue, 'Writes a synthetic checkpoint and log from a seed')
            [CompletionResult]::new('import', 'import', [CompletionResultType]::ParameterValue, 'Imports a safetensors file as a checkpoint (one page per tensor)')
            [CompletionResult]::new('export', 'export', [CompletionResultType]::ParameterValue, 'Exports a checkpoint (after replaying logs on it) as a safetensors file')
            [CompletionResult]::new('inspect', 'inspect', [CompletionResultType]::ParameterValue, 'Shows what is inside checkpoints and logs')
            [CompletionResult]::new('verify', 'verify', [CompletionResultType]::ParameterValue, 'Checks every checksum, the structure, and that every delta applies. Quiet unless asked')
            [CompletionResult]::new('recover', 'recover', [CompletionResultType]::ParameterValue, 'Cuts a torn tail off a log, keeping a backup of the cut bytes. Never drops a whole record')
            [CompletionResult]::new('replay', 'replay', [CompletionResultType]::ParameterValue, 'Replays a checkpoint plus logs, prints the state hash and timings, optionally writes the result')
            [CompletionResult]::new('compact', 'compact', [CompletionResultType]::ParameterValue, 'Folds a log into a new checkpoint, or merges a log''s deltas into fewer, smaller records')
            [CompletionResult]::new('diff', 'diff', [CompletionResultType]::ParameterValue, 'Shows what differs between two states; optionally writes the log that turns A into B')
            [CompletionResult]::new('stress', 'stress', [CompletionResultType]::ParameterValue, 'Soak test: rounds of gen, replay, verify, compact, diff, torn-tail recovery and corruption detection on small random states, checking that every path agrees on the state hash')
            [CompletionResult]::new('derive', 'derive', [CompletionResultType]::ParameterValue, 'Changes the dependency graph of a log (appending a graph record under its writer lock)')
            [CompletionResult]::new('propagate', 'propagate', [CompletionResultType]::ParameterValue, 'Recomputes every derived page whose inputs changed since the last propagation in the log, and appends the outputs (changed bytes only) and a PROPAGATED record as one atomic group')
            [CompletionResult]::new('explain', 'explain', [CompletionResultType]::ParameterValue, 'Says which parent change, at which record, caused a page''s last recomputation, back to the change from outside that started it')
            [CompletionResult]::new('watch', 'watch', [CompletionResultType]::ParameterValue, 'Follows a log that another process is appending to: records/s and bytes/s by record type, sequence and epoch, segments, compression, the pages written most, and the tail''s health (how far checksums were checked, a torn record, the writer holding the lock). Reads as any reader does, so a writer never waits for it and it never shows half a record or group; after the first snapshot, a refresh reads only the segment that was last and any new ones. With --device, it also keeps a copy of the state on a CUDA device, applying each refresh''s new records to it, and shows the pages resident and the device memory in use')
            [CompletionResult]::new('bench', 'bench', [CompletionResultType]::ParameterValue, 'In-process benchmarks (CUDA started once, then timed runs); JSON on stdout')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Prints a shell completion script: bash, zsh, fish, powershell or elvish')
            [CompletionResult]::new('man-pages', 'man-pages', [CompletionResultType]::ParameterValue, 'Writes the man pages (mmsb.1 and one per subcommand) into a directory, and with --completions-out every shell''s completion script into another (what a release ships)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'mmsb;gen' {
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Checkpoint to write')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Checkpoint to write')
            [CompletionResult]::new('--log', '--log', [CompletionResultType]::ParameterName, 'Log directory to write (default: the checkpoint''s path with extension .log)')
            [CompletionResult]::new('--seed', '--seed', [CompletionResultType]::ParameterName, 'RNG seed: the same seed and options give the same bytes')
            [CompletionResult]::new('--pages', '--pages', [CompletionResultType]::ParameterName, 'Number of pages (at most 100,000,000)')
            [CompletionResult]::new('--total-size', '--total-size', [CompletionResultType]::ParameterName, 'Total page bytes (suffixes K, M, G, KiB, MiB, GiB; at most 1 TiB)')
            [CompletionResult]::new('--page-sizes', '--page-sizes', [CompletionResultType]::ParameterName, 'Page-size distribution')
            [CompletionResult]::new('--deltas', '--deltas', [CompletionResultType]::ParameterName, 'Records in the log (0: no log; at most 1,000,000,000)')
            [CompletionResult]::new('--mix', '--mix', [CompletionResultType]::ParameterName, 'Weights of record kinds: full, sparse, masked, create, resize, delete, fill')
            [CompletionResult]::new('--delta-bytes', '--delta-bytes', [CompletionResultType]::ParameterName, 'Bytes per sparse range, masked span or created page, as MIN..MAX (1 B to 1 GiB)')
            [CompletionResult]::new('--max-ranges', '--max-ranges', [CompletionResultType]::ParameterName, 'Most ranges in one sparse record (1 to 4096)')
            [CompletionResult]::new('--full-max', '--full-max', [CompletionResultType]::ParameterName, 'Largest page that full-page writes go to (others get sparse writes; at most 1 TiB)')
            [CompletionResult]::new('--hot-fraction', '--hot-fraction', [CompletionResultType]::ParameterName, 'Fraction of pages that are hot (0 to 1)')
            [CompletionResult]::new('--hot-weight', '--hot-weight', [CompletionResultType]::ParameterName, 'Fraction of writes that go to hot pages (0 to 1)')
            [CompletionResult]::new('--segment-size', '--segment-size', [CompletionResultType]::ParameterName, 'Log segment size (4 KiB to 1 TiB)')
            [CompletionResult]::new('--compress', '--compress', [CompletionResultType]::ParameterName, 'Payload compression: none, auto, zstd or zstd:LEVEL')
            [CompletionResult]::new('--graph', '--graph', [CompletionResultType]::ParameterName, 'Make the pages a graph of derived pages of this shape (pages of one size; the log then writes root pages only, and `mmsb propagate` brings the derived pages up to date)')
            [CompletionResult]::new('--fanout', '--fanout', [CompletionResultType]::ParameterName, 'With --graph: children per page, for tree (1 to 1,000,000)')
            [CompletionResult]::new('--levels', '--levels', [CompletionResultType]::ParameterName, 'With --graph: levels, for layered (1 to 1,000,000)')
            [CompletionResult]::new('--parents', '--parents', [CompletionResultType]::ParameterName, 'With --graph: parents per derived page, for layered and random (1 to 64)')
            [CompletionResult]::new('--rule', '--rule', [CompletionResultType]::ParameterName, 'With --graph: the rule of every derived page (copy, xor, add-u32, min-u32, max-u32, or slice:OFFSET,LEN; a rule must keep the page size)')
            [CompletionResult]::new('--metrics-file', '--metrics-file', [CompletionResultType]::ParameterName, 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print a JSON summary on stdout')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'When another mmsb process holds a log''s write lock, wait for it instead of failing')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'mmsb;import' {
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Checkpoint to write')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Checkpoint to write')
            [CompletionResult]::new('--epoch', '--epoch', [CompletionResultType]::ParameterName, 'Every page''s epoch: the training step the file is, so that the records `diff --append` makes from it carry the step and `replay --to-epoch STEP` restores it')
            [CompletionResult]::new('--metrics-file', '--metrics-file', [CompletionResultType]::ParameterName, 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print a JSON summary on stdout')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'When another mmsb process holds a log''s write lock, wait for it instead of failing')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'mmsb;export' {
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'safetensors file to write')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'safetensors file to write')
            [CompletionResult]::new('--to-seq', '--to-seq', [CompletionResultType]::ParameterName, 'Replay records up to and including this sequence number')
            [CompletionResult]::new('--to-epoch', '--to-epoch', [CompletionResultType]::ParameterName, 'Replay until the first record whose epoch is above this one')
            [CompletionResult]::new('--metrics-file', '--metrics-file', [CompletionResultType]::ParameterName, 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print a JSON summary on stdout')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'When another mmsb process holds a log''s write lock, wait for it instead of failing')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'mmsb;inspect' {
            [CompletionResult]::new('--from-seq', '--from-seq', [CompletionResultType]::ParameterName, 'With --records: lowest sequence number')
            [CompletionResult]::new('--to-seq', '--to-seq', [CompletionResultType]::ParameterName, 'With --records: highest sequence number')
            [CompletionResult]::new('--page', '--page', [CompletionResultType]::ParameterName, 'Only these pages (in a checkpoint''s page list, and with --records, the records for them): an id (7), an id range (10-20) or a glob over names (''model.layers.1?.*''); repeatable. Names of a log''s pages come from its CREATE records and from a checkpoint given with it')
            [CompletionResult]::new('--graph', '--graph', [CompletionResultType]::ParameterName, 'Print the dependency graph (of the checkpoint after its log) in this format instead')
            [CompletionResult]::new('--metrics-file', '--metrics-file', [CompletionResultType]::ParameterName, 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome')
            [CompletionResult]::new('--records', '--records', [CompletionResultType]::ParameterName, 'List log records')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON on stdout')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'When another mmsb process holds a log''s write lock, wait for it instead of failing')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'mmsb;verify' {
            [CompletionResult]::new('--metrics-file', '--metrics-file', [CompletionResultType]::ParameterName, 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print a JSON report of every problem on stdout')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'Print a summary table even when all is well')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Print a summary table even when all is well')
            [CompletionResult]::new('--repair', '--repair', [CompletionResultType]::ParameterName, 'If the only problem is a torn tail, cut it (as `mmsb recover` does)')
            [CompletionResult]::new('--rederive', '--rederive', [CompletionResultType]::ParameterName, 'Also derive every derived page again by its built-in rule and check that its bytes (the logged outputs of the last propagation) match')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'When another mmsb process holds a log''s write lock, wait for it instead of failing')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'mmsb;recover' {
            [CompletionResult]::new('--backup', '--backup', [CompletionResultType]::ParameterName, 'Where to keep the cut bytes (default: beside the segment, SEGMENT.torn-OFFSET)')
            [CompletionResult]::new('--metrics-file', '--metrics-file', [CompletionResultType]::ParameterName, 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON on stdout')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'When another mmsb process holds a log''s write lock, wait for it instead of failing')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'mmsb;replay' {
            [CompletionResult]::new('--device', '--device', [CompletionResultType]::ParameterName, 'Where to replay: auto (cuda:0 when a GPU is there, else the CPU), cpu, cuda:N, or a list of devices (cuda:0,cuda:1) with --placement')
            [CompletionResult]::new('--placement', '--placement', [CompletionResultType]::ParameterName, 'With several devices: shard (each page on one device, balanced by bytes) or replicate (every page on every device; the file is read once and copied device to device)')
            [CompletionResult]::new('--memory', '--memory', [CompletionResultType]::ParameterName, 'GPU memory for the pages: device, unified or host-mapped')
            [CompletionResult]::new('--pages', '--pages', [CompletionResultType]::ParameterName, 'Replay only these pages: an id (7), an id range (10-20) or a glob over names (''model.layers.1?.*''); repeatable. The hash and -o cover the selected pages. A GPU loads only them and applies only their deltas; the CPU replays the whole log (every record is still checked) and keeps them')
            [CompletionResult]::new('--read', '--read', [CompletionResultType]::ParameterName, 'GPU: how to read the checkpoint (default: from the page cache when the file is cached, else with O_DIRECT)')
            [CompletionResult]::new('--to-seq', '--to-seq', [CompletionResultType]::ParameterName, 'Replay records up to and including this sequence number')
            [CompletionResult]::new('--to-epoch', '--to-epoch', [CompletionResultType]::ParameterName, 'Replay until the first record whose epoch is above this one')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Write the replayed state as a checkpoint')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Write the replayed state as a checkpoint')
            [CompletionResult]::new('--metrics-file', '--metrics-file', [CompletionResultType]::ParameterName, 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome')
            [CompletionResult]::new('--verify', '--verify', [CompletionResultType]::ParameterName, 'GPU: check the bytes on the device against the checkpoint''s CRC32C and compute the state hash on the GPU. (The CPU replay always checks, and always prints the hash.)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON on stdout')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'When another mmsb process holds a log''s write lock, wait for it instead of failing')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'mmsb;compact' {
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output: the new checkpoint (with --log-only: the new log directory)')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output: the new checkpoint (with --log-only: the new log directory)')
            [CompletionResult]::new('--to-seq', '--to-seq', [CompletionResultType]::ParameterName, 'Fold (or merge) only records up to this sequence number; later records are copied into the output log unchanged')
            [CompletionResult]::new('--rest-log', '--rest-log', [CompletionResultType]::ParameterName, 'Log directory for the records after --to-seq, against the new checkpoint (default: the output''s path with extension .log)')
            [CompletionResult]::new('--compress', '--compress', [CompletionResultType]::ParameterName, 'Payload compression of the records written: auto (zstd where it saves 1/32), zstd, zstd:LEVEL or none')
            [CompletionResult]::new('--metrics-file', '--metrics-file', [CompletionResultType]::ParameterName, 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome')
            [CompletionResult]::new('--log-only', '--log-only', [CompletionResultType]::ParameterName, 'Merge the log''s deltas without reading or writing a checkpoint')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON on stdout')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'When another mmsb process holds a log''s write lock, wait for it instead of failing')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'mmsb;diff' {
            [CompletionResult]::new('--a-log', '--a-log', [CompletionResultType]::ParameterName, 'A log segment or directory replayed onto A (repeatable)')
            [CompletionResult]::new('--b-log', '--b-log', [CompletionResultType]::ParameterName, 'A log segment or directory replayed onto B (repeatable)')
            [CompletionResult]::new('--a-to-seq', '--a-to-seq', [CompletionResultType]::ParameterName, 'Replay A''s log up to this sequence number')
            [CompletionResult]::new('--b-to-seq', '--b-to-seq', [CompletionResultType]::ParameterName, 'Replay B''s log up to this sequence number')
            [CompletionResult]::new('--ranges', '--ranges', [CompletionResultType]::ParameterName, 'Differing ranges listed per page (0 to 10,000)')
            [CompletionResult]::new('--emit-log', '--emit-log', [CompletionResultType]::ParameterName, 'Write the smallest log that turns A into B, as a new log directory against A''s state')
            [CompletionResult]::new('--compress', '--compress', [CompletionResultType]::ParameterName, 'With --emit-log: payload compression (auto, zstd, zstd:LEVEL or none)')
            [CompletionResult]::new('--metrics-file', '--metrics-file', [CompletionResultType]::ParameterName, 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome')
            [CompletionResult]::new('--stat', '--stat', [CompletionResultType]::ParameterName, 'One line per differing page')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print nothing: the exit status says whether the states differ')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print nothing: the exit status says whether the states differ')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON on stdout')
            [CompletionResult]::new('--append', '--append', [CompletionResultType]::ParameterName, 'With --emit-log: add the records to the end of A''s log (the one --a-log, replayed whole) instead of a new log, so a series of snapshots becomes one checkpoint and one log')
            [CompletionResult]::new('--bytes-only', '--bytes-only', [CompletionResultType]::ParameterName, 'Compare bytes, lengths and metadata only: states that differ only in page epochs (and so in state hash) count as identical for the exit status')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'When another mmsb process holds a log''s write lock, wait for it instead of failing')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'mmsb;stress' {
            [CompletionResult]::new('--duration', '--duration', [CompletionResultType]::ParameterName, 'How long to run (s, m, h or ms suffix; more than 0, at most 7 days)')
            [CompletionResult]::new('--seed', '--seed', [CompletionResultType]::ParameterName, 'Seed of the first round (default: from the clock; printed either way)')
            [CompletionResult]::new('--dir', '--dir', [CompletionResultType]::ParameterName, 'Directory for the rounds'' files (default: the system''s temporary directory)')
            [CompletionResult]::new('--metrics-file', '--metrics-file', [CompletionResultType]::ParameterName, 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON on stdout')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'When another mmsb process holds a log''s write lock, wait for it instead of failing')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'mmsb;derive' {
            [CompletionResult]::new('--metrics-file', '--metrics-file', [CompletionResultType]::ParameterName, 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'When another mmsb process holds a log''s write lock, wait for it instead of failing')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Makes a page derive from parent pages by a rule (replacing any rule it had)')
            [CompletionResult]::new('clear', 'clear', [CompletionResultType]::ParameterValue, 'Makes a derived page a root again (its bytes stay as they are)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'mmsb;derive;set' {
            [CompletionResult]::new('--page', '--page', [CompletionResultType]::ParameterName, 'The derived page')
            [CompletionResult]::new('--rule', '--rule', [CompletionResultType]::ParameterName, 'The rule (or slice:OFFSET,LEN)')
            [CompletionResult]::new('--parents', '--parents', [CompletionResultType]::ParameterName, 'Parent pages, in order, comma-separated')
            [CompletionResult]::new('--params', '--params', [CompletionResultType]::ParameterName, 'The rule''s parameters, comma-separated (slice: OFFSET,LEN)')
            [CompletionResult]::new('--metrics-file', '--metrics-file', [CompletionResultType]::ParameterName, 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON on stdout')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'When another mmsb process holds a log''s write lock, wait for it instead of failing')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'mmsb;derive;clear' {
            [CompletionResult]::new('--page', '--page', [CompletionResultType]::ParameterName, 'The page')
            [CompletionResult]::new('--metrics-file', '--metrics-file', [CompletionResultType]::ParameterName, 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON on stdout')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'When another mmsb process holds a log''s write lock, wait for it instead of failing')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'mmsb;derive;help' {
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Makes a page derive from parent pages by a rule (replacing any rule it had)')
            [CompletionResult]::new('clear', 'clear', [CompletionResultType]::ParameterValue, 'Makes a derived page a root again (its bytes stay as they are)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'mmsb;derive;help;set' {
            break
        }
        'mmsb;derive;help;clear' {
            break
        }
        'mmsb;derive;help;help' {
            break
        }
        'mmsb;propagate' {
            [CompletionResult]::new('--metrics-file', '--metrics-file', [CompletionResultType]::ParameterName, 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome')
            [CompletionResult]::new('--dry-run', '--dry-run', [CompletionResultType]::ParameterName, 'Write nothing; list the pages it would start from and may recompute')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON on stdout')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'When another mmsb process holds a log''s write lock, wait for it instead of failing')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'mmsb;explain' {
            [CompletionResult]::new('--seq', '--seq', [CompletionResultType]::ParameterName, 'Only records up to this sequence number')
            [CompletionResult]::new('--metrics-file', '--metrics-file', [CompletionResultType]::ParameterName, 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON on stdout')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'When another mmsb process holds a log''s write lock, wait for it instead of failing')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'mmsb;watch' {
            [CompletionResult]::new('--interval', '--interval', [CompletionResultType]::ParameterName, 'Time between refreshes (e.g. 500ms, 2s)')
            [CompletionResult]::new('--top', '--top', [CompletionResultType]::ParameterName, 'Pages listed among those written most')
            [CompletionResult]::new('--device', '--device', [CompletionResultType]::ParameterName, 'Replay the checkpoint and the log onto this CUDA device (cuda:N) and apply the new records to that copy at each refresh; a record that creates, deletes or resizes a page stops the copy (exit 2)')
            [CompletionResult]::new('--metrics-file', '--metrics-file', [CompletionResultType]::ParameterName, 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome')
            [CompletionResult]::new('--once', '--once', [CompletionResultType]::ParameterName, 'Print one snapshot and exit')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON on stdout: one document with --once, else one per line at each refresh')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'When another mmsb process holds a log''s write lock, wait for it instead of failing')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'mmsb;bench' {
            [CompletionResult]::new('--metrics-file', '--metrics-file', [CompletionResultType]::ParameterName, 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'When another mmsb process holds a log''s write lock, wait for it instead of failing')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('load', 'load', [CompletionResultType]::ParameterValue, 'Times loading a checkpoint into GPU memory: file open to the last byte on the device')
            [CompletionResult]::new('deltas', 'deltas', [CompletionResultType]::ParameterValue, 'Times applying a log to a resident checkpoint: log open to applied and synchronised')
            [CompletionResult]::new('propagation', 'propagation', [CompletionResultType]::ParameterValue, 'Streams updates through a generated graph of derived pages: the propagation engine against the naive engine and a full sweep, on the same graph and updates')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'mmsb;bench;load' {
            [CompletionResult]::new('--device', '--device', [CompletionResultType]::ParameterName, 'The device')
            [CompletionResult]::new('--runs', '--runs', [CompletionResultType]::ParameterName, 'Timed runs (the median is reported; 1 to 1000)')
            [CompletionResult]::new('--read', '--read', [CompletionResultType]::ParameterName, 'How to read the file (default: by page-cache residency)')
            [CompletionResult]::new('--threads', '--threads', [CompletionResultType]::ParameterName, 'Staging threads (tuning; default: chosen by size and read mode; 1 to 256)')
            [CompletionResult]::new('--slot', '--slot', [CompletionResultType]::ParameterName, 'Staging slot size (tuning; with --threads; 4 KiB to 1 GiB)')
            [CompletionResult]::new('--metrics-file', '--metrics-file', [CompletionResultType]::ParameterName, 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome')
            [CompletionResult]::new('--cold', '--cold', [CompletionResultType]::ParameterName, 'Drop the file from the page cache before each run')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'When another mmsb process holds a log''s write lock, wait for it instead of failing')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'mmsb;bench;deltas' {
            [CompletionResult]::new('--device', '--device', [CompletionResultType]::ParameterName, 'The device')
            [CompletionResult]::new('--runs', '--runs', [CompletionResultType]::ParameterName, 'Timed runs (the median is reported; 1 to 1000)')
            [CompletionResult]::new('--metrics-file', '--metrics-file', [CompletionResultType]::ParameterName, 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'When another mmsb process holds a log''s write lock, wait for it instead of failing')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'mmsb;bench;propagation' {
            [CompletionResult]::new('--pages', '--pages', [CompletionResultType]::ParameterName, 'Pages in the graph (2 to 100,000,000)')
            [CompletionResult]::new('--shape', '--shape', [CompletionResultType]::ParameterName, 'The graph''s shape')
            [CompletionResult]::new('--fanout', '--fanout', [CompletionResultType]::ParameterName, 'Children per page, for --shape tree (1 to 1,000,000)')
            [CompletionResult]::new('--levels', '--levels', [CompletionResultType]::ParameterName, 'Levels, for --shape layered (1 to 1,000,000)')
            [CompletionResult]::new('--parents', '--parents', [CompletionResultType]::ParameterName, 'Parents per derived page, for --shape layered and random (1 to 64)')
            [CompletionResult]::new('--updates', '--updates', [CompletionResultType]::ParameterName, 'Root updates in all (1 to 1,000,000,000)')
            [CompletionResult]::new('--batch', '--batch', [CompletionResultType]::ParameterName, 'Updates per flush (1 to 1,000,000,000)')
            [CompletionResult]::new('--page-size', '--page-size', [CompletionResultType]::ParameterName, 'Bytes per page (1 B to 1 MiB)')
            [CompletionResult]::new('--locality', '--locality', [CompletionResultType]::ParameterName, 'Share of updates (0 to 1) that go to a hot set of 1% of the roots, the rest to any root: more duplicates in a batch, more overlap between the updates'' cones')
            [CompletionResult]::new('--seed', '--seed', [CompletionResultType]::ParameterName, 'Seed of the graph and the updates')
            [CompletionResult]::new('--baseline-seconds', '--baseline-seconds', [CompletionResultType]::ParameterName, 'The most seconds each baseline runs')
            [CompletionResult]::new('--metrics-file', '--metrics-file', [CompletionResultType]::ParameterName, 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON on stdout')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'When another mmsb process holds a log''s write lock, wait for it instead of failing')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'mmsb;bench;help' {
            [CompletionResult]::new('load', 'load', [CompletionResultType]::ParameterValue, 'Times loading a checkpoint into GPU memory: file open to the last byte on the device')
            [CompletionResult]::new('deltas', 'deltas', [CompletionResultType]::ParameterValue, 'Times applying a log to a resident checkpoint: log open to applied and synchronised')
            [CompletionResult]::new('propagation', 'propagation', [CompletionResultType]::ParameterValue, 'Streams updates through a generated graph of derived pages: the propagation engine against the naive engine and a full sweep, on the same graph and updates')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'mmsb;bench;help;load' {
            break
        }
        'mmsb;bench;help;deltas' {
            break
        }
        'mmsb;bench;help;propagation' {
            break
        }
        'mmsb;bench;help;help' {
            break
        }
        'mmsb;completions' {
            [CompletionResult]::new('--metrics-file', '--metrics-file', [CompletionResultType]::ParameterName, 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'When another mmsb process holds a log''s write lock, wait for it instead of failing')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'mmsb;man-pages' {
            [CompletionResult]::new('--out', '--out', [CompletionResultType]::ParameterName, 'Output directory')
            [CompletionResult]::new('--completions-out', '--completions-out', [CompletionResultType]::ParameterName, 'Directory for the completion scripts')
            [CompletionResult]::new('--metrics-file', '--metrics-file', [CompletionResultType]::ParameterName, 'On exit, write the run''s metrics to this file in the Prometheus text format (atomically: for node_exporter''s textfile collector), whatever the outcome')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'When another mmsb process holds a log''s write lock, wait for it instead of failing')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'mmsb;help' {
            [CompletionResult]::new('gen', 'gen', [CompletionResultType]::ParameterValue, 'Writes a synthetic checkpoint and log from a seed')
            [CompletionResult]::new('import', 'import', [CompletionResultType]::ParameterValue, 'Imports a safetensors file as a checkpoint (one page per tensor)')
            [CompletionResult]::new('export', 'export', [CompletionResultType]::ParameterValue, 'Exports a checkpoint (after replaying logs on it) as a safetensors file')
            [CompletionResult]::new('inspect', 'inspect', [CompletionResultType]::ParameterValue, 'Shows what is inside checkpoints and logs')
            [CompletionResult]::new('verify', 'verify', [CompletionResultType]::ParameterValue, 'Checks every checksum, the structure, and that every delta applies. Quiet unless asked')
            [CompletionResult]::new('recover', 'recover', [CompletionResultType]::ParameterValue, 'Cuts a torn tail off a log, keeping a backup of the cut bytes. Never drops a whole record')
            [CompletionResult]::new('replay', 'replay', [CompletionResultType]::ParameterValue, 'Replays a checkpoint plus logs, prints the state hash and timings, optionally writes the result')
            [CompletionResult]::new('compact', 'compact', [CompletionResultType]::ParameterValue, 'Folds a log into a new checkpoint, or merges a log''s deltas into fewer, smaller records')
            [CompletionResult]::new('diff', 'diff', [CompletionResultType]::ParameterValue, 'Shows what differs between two states; optionally writes the log that turns A into B')
            [CompletionResult]::new('stress', 'stress', [CompletionResultType]::ParameterValue, 'Soak test: rounds of gen, replay, verify, compact, diff, torn-tail recovery and corruption detection on small random states, checking that every path agrees on the state hash')
            [CompletionResult]::new('derive', 'derive', [CompletionResultType]::ParameterValue, 'Changes the dependency graph of a log (appending a graph record under its writer lock)')
            [CompletionResult]::new('propagate', 'propagate', [CompletionResultType]::ParameterValue, 'Recomputes every derived page whose inputs changed since the last propagation in the log, and appends the outputs (changed bytes only) and a PROPAGATED record as one atomic group')
            [CompletionResult]::new('explain', 'explain', [CompletionResultType]::ParameterValue, 'Says which parent change, at which record, caused a page''s last recomputation, back to the change from outside that started it')
            [CompletionResult]::new('watch', 'watch', [CompletionResultType]::ParameterValue, 'Follows a log that another process is appending to: records/s and bytes/s by record type, sequence and epoch, segments, compression, the pages written most, and the tail''s health (how far checksums were checked, a torn record, the writer holding the lock). Reads as any reader does, so a writer never waits for it and it never shows half a record or group; after the first snapshot, a refresh reads only the segment that was last and any new ones. With --device, it also keeps a copy of the state on a CUDA device, applying each refresh''s new records to it, and shows the pages resident and the device memory in use')
            [CompletionResult]::new('bench', 'bench', [CompletionResultType]::ParameterValue, 'In-process benchmarks (CUDA started once, then timed runs); JSON on stdout')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Prints a shell completion script: bash, zsh, fish, powershell or elvish')
            [CompletionResult]::new('man-pages', 'man-pages', [CompletionResultType]::ParameterValue, 'Writes the man pages (mmsb.1 and one per subcommand) into a directory, and with --completions-out every shell''s completion script into another (what a release ships)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'mmsb;help;gen' {
            break
        }
        'mmsb;help;import' {
            break
        }
        'mmsb;help;export' {
            break
        }
        'mmsb;help;inspect' {
            break
        }
        'mmsb;help;verify' {
            break
        }
        'mmsb;help;recover' {
            break
        }
        'mmsb;help;replay' {
            break
        }
        'mmsb;help;compact' {
            break
        }
        'mmsb;help;diff' {
            break
        }
        'mmsb;help;stress' {
            break
        }
        'mmsb;help;derive' {
            [CompletionResult]::new('set', 'set', [CompletionResultType]::ParameterValue, 'Makes a page derive from parent pages by a rule (replacing any rule it had)')
            [CompletionResult]::new('clear', 'clear', [CompletionResultType]::ParameterValue, 'Makes a derived page a root again (its bytes stay as they are)')
            break
        }
        'mmsb;help;derive;set' {
            break
        }
        'mmsb;help;derive;clear' {
            break
        }
        'mmsb;help;propagate' {
            break
        }
        'mmsb;help;explain' {
            break
        }
        'mmsb;help;watch' {
            break
        }
        'mmsb;help;bench' {
            [CompletionResult]::new('load', 'load', [CompletionResultType]::ParameterValue, 'Times loading a checkpoint into GPU memory: file open to the last byte on the device')
            [CompletionResult]::new('deltas', 'deltas', [CompletionResultType]::ParameterValue, 'Times applying a log to a resident checkpoint: log open to applied and synchronised')
            [CompletionResult]::new('propagation', 'propagation', [CompletionResultType]::ParameterValue, 'Streams updates through a generated graph of derived pages: the propagation engine against the naive engine and a full sweep, on the same graph and updates')
            break
        }
        'mmsb;help;bench;load' {
            break
        }
        'mmsb;help;bench;deltas' {
            break
        }
        'mmsb;help;bench;propagation' {
            break
        }
        'mmsb;help;completions' {
            break
        }
        'mmsb;help;man-pages' {
            break
        }
        'mmsb;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
