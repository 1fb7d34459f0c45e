//! The process's heap (a leaf module): giving its free memory back to the system.

/// Hands the heap's free memory back to the system (glibc's `malloc_trim`, which also releases
/// free pages inside every arena), so a burst of sessions or of argon2id verifications (19 MiB
/// each, kept by glibc once its mmap threshold has grown) does not leave the daemon's resident
/// size at its peak. Takes milliseconds on a large heap: call it on a blocking thread.
pub fn trim() {
    // SAFETY: malloc_trim only releases free heap memory; no pointer is involved.
    unsafe {
        libc::malloc_trim(0);
    }
}
