//! A progress bar on stderr that appears only when stderr is a terminal and the work has run
//! for more than a second, so scripts and quick runs see nothing.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mmsb::progress::Progress;

pub struct Bar {
    progress: Progress,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Bar {
    /// A bar over `total` bytes of work (the library may add more as it learns of it).
    pub fn start(total: u64, label: &'static str) -> Bar {
        let progress = Progress::new(total);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::io::stderr().is_terminal().then(|| {
            let (progress, stop) = (progress.clone(), stop.clone());
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut bar = None;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::park_timeout(Duration::from_millis(100));
                    if bar.is_none() && started.elapsed() > Duration::from_secs(1) {
                        // Starting from the work already done keeps the first rate estimate sane.
                        let b = indicatif::ProgressBar::new(progress.total())
                            .with_message(label)
                            .with_position(progress.done());
                        b.set_style(
                            indicatif::ProgressStyle::with_template(
                                "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}",
                            )
                            .expect("valid template"),
                        );
                        bar = Some(b);
                    }
                    if let Some(b) = &bar {
                        b.set_length(progress.total());
                        b.set_position(progress.done());
                    }
                }
                if let Some(b) = bar {
                    b.finish_and_clear();
                }
            })
        });
        Bar { progress, stop, thread }
    }

    /// The counters, for a library call that counts (and may add to the total) as it goes;
    /// `None` when no bar can show, so that the call measures nothing for it.
    pub fn progress(&self) -> Option<Progress> {
        self.thread.is_some().then(|| self.progress.clone())
    }

    pub fn counter(&self) -> &AtomicU64 {
        self.progress.counter()
    }

    /// The counter, for library calls that keep it.
    pub fn shared(&self) -> Arc<AtomicU64> {
        self.progress.shared_counter()
    }

    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
