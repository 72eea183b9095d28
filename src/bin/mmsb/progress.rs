//! A progress bar on stderr that appears only when stderr is a terminal and the work has run
//! for more than a second, so scripts and quick runs see nothing.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct Progress {
    done: Arc<AtomicU64>,
    total: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Whether a bar can appear at all (stderr is a terminal): a caller can skip measuring the
    /// work when it cannot.
    pub fn can_show() -> bool {
        std::io::stderr().is_terminal()
    }

    pub fn start(total: u64, label: &'static str) -> Progress {
        let done = Arc::new(AtomicU64::new(0));
        let total = Arc::new(AtomicU64::new(total));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::io::stderr().is_terminal().then(|| {
            let (done, stop, total) = (done.clone(), stop.clone(), total.clone());
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut bar = None;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::park_timeout(Duration::from_millis(100));
                    if bar.is_none() && started.elapsed() > Duration::from_secs(1) {
                        // Starting from the work already done keeps the first rate estimate sane.
                        let b = indicatif::ProgressBar::new(total.load(Ordering::Relaxed))
                            .with_message(label)
                            .with_position(done.load(Ordering::Relaxed));
                        b.set_style(
                            indicatif::ProgressStyle::with_template(
                                "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}",
                            )
                            .expect("valid template"),
                        );
                        bar = Some(b);
                    }
                    if let Some(b) = &bar {
                        b.set_length(total.load(Ordering::Relaxed));
                        b.set_position(done.load(Ordering::Relaxed));
                    }
                }
                if let Some(b) = bar {
                    b.finish_and_clear();
                }
            })
        });
        Progress {
            done,
            total,
            stop,
            thread,
        }
    }

    /// Adds work learnt of on the way (the bytes of an output known once a replay is done).
    pub fn add_total(&self, bytes: u64) {
        self.total.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn counter(&self) -> &AtomicU64 {
        &self.done
    }

    /// The counter, for library calls that keep it.
    pub fn shared(&self) -> Arc<AtomicU64> {
        self.done.clone()
    }

    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
