//! Test helpers shared by the docroot tests (here, in the transfer engine and in browsing): a
//! docroot beside an outside directory, a listing to prove the outside untouched, and a thread
//! that swaps a directory for a link while a test races it.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A docroot (`root/`, empty) and an outside directory beside it holding `secret`
/// (`outside`), in one temp dir removed when dropped.
pub(crate) struct Tree {
    tmp: tempfile::TempDir,
    /// The docroot.
    pub(crate) root_dir: PathBuf,
    /// The outside directory.
    pub(crate) outside: PathBuf,
}

/// Makes a [`Tree`].
pub(crate) fn tree() -> Tree {
    let tmp = tempfile::tempdir().unwrap();
    let root_dir = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    fs::create_dir(&root_dir).unwrap();
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), b"outside").unwrap();
    Tree {
        tmp,
        root_dir,
        outside,
    }
}

impl Tree {
    /// Creates the directory `name` beside the docroot.
    pub(crate) fn beside(&self, name: &str) -> PathBuf {
        let dir = self.tmp.path().join(name);
        fs::create_dir(&dir).unwrap();
        dir
    }
}

/// Everything below `dir`, not following links: (path, size), sorted.
pub(crate) fn listing(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                stack.push(e.path());
            }
            out.push((e.path(), m.len()));
        }
    }
    out.sort();
    out
}

/// A thread exchanging two names (one atomic `RENAME_EXCHANGE`, back and forth, as fast as it
/// can) until [`Swapper::stop`].
pub(crate) struct Swapper {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<u64>,
}

impl Swapper {
    /// Starts swapping `a` and `b`.
    pub(crate) fn start(a: PathBuf, b: PathBuf) -> Swapper {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !flag.load(Ordering::Relaxed) {
                nix::fcntl::renameat2(None, &a, None, &b, nix::fcntl::RenameFlags::RENAME_EXCHANGE)
                    .unwrap();
                swaps += 1;
            }
            swaps
        });
        Swapper { stop, thread }
    }

    /// Stops the thread; returns how many swaps it made.
    pub(crate) fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}
